"""Review of the first-hour changes (issue 14) as a new user and an attacker:
what ``add``/``remove`` accept, feeds.opml staying readable, ``summarize``'s
reading of its input. Each test is a finding that was fixed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from test_first_hour_cli import cli

from aggregator import opml
from aggregator.types import Subscription

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("clean_env")  # the same set-up as test_first_hour_cli
DEAD = "http://127.0.0.1:9/"  # the discard port: nothing listens, the feed "does not answer"




@pytest.mark.parametrize("bad", ["\x01", "\x0b", "\udcff", "\ufffe"])
def test_a_title_or_category_xml_cannot_hold_leaves_feeds_opml_readable(tmp_path, capsys, bad):
    # "\udcff" is how Python hands over an argv byte that is not UTF-8 ($'\xff')
    feeds = tmp_path / "feeds.opml"
    shutil.copy(ROOT / "feeds.opml", feeds)
    code, out, err = cli(capsys, "--db", "x.db", "add", DEAD + "a", "--title", f"a{bad}b",
                         "--category", f"World{bad}")
    assert code == 0, err
    code, out, err = cli(capsys, "--db", "x.db", "add", DEAD + "b", "--title", f"c{bad}d")
    assert code == 0, err
    subs = {s.url: s for s in opml.read(feeds)}  # raised OPMLError: not well-formed
    assert (subs[DEAD + "a"].title, subs[DEAD + "a"].category) == ("ab", "World")
    assert subs[DEAD + "b"].title == "cd"
    assert len(subs) == 11
    # the tree path (a file the text edit can't take) drops them too
    doc = opml.Document(None)
    assert doc.add(Subscription(DEAD + "c", f"e{bad}f", f"g{bad}"))
    assert [(s.title, s.category) for s in opml.subscriptions(opml.parse_bytes(
        doc.to_bytes()))] == [("ef", "g")]


def test_remove_by_a_url_whose_path_differs_in_case_removes_nothing(tmp_path, capsys):
    # an outline added without a title is titled with its URL; a URL typed in
    # another case matched that title, and removed a feed of another path
    feeds = tmp_path / "feeds.opml"
    code, _, err = cli(capsys, "--db", "x.db", "add", DEAD + "CAPS")
    assert code == 0, err
    code, out, err = cli(capsys, "--db", "x.db", "remove", DEAD + "caps")
    assert code == 1 and out == "" and f"not subscribed: {DEAD}caps" in err
    assert [s.url for s in opml.read(feeds)] == [DEAD + "CAPS"]
    code, out, err = cli(capsys, "--db", "x.db", "remove", " HTTP://127.0.0.1:9/CAPS ")
    assert code == 0 and out.startswith(f"removed: {DEAD}CAPS"), err
    assert opml.read(feeds) == []


@pytest.mark.parametrize("typed", ["http://a b/feed", "http://127.0.0.1:9/a feed",
                                   "http://127.0.0.1:9/\x01", "http://127.0.0.1:9/a\nb"])
def test_add_of_a_url_with_a_space_or_control_character_is_refused(tmp_path, capsys, typed):
    # "http://a b/" failed as a DNS lookup, "not answering": it was subscribed anyway
    code, out, err = cli(capsys, "--db", "x.db", "add", typed)
    assert code == 1 and out == ""
    assert "a URL has no spaces or control characters" in err
    assert not (tmp_path / "feeds.opml").exists()


@pytest.mark.parametrize("typed", ["javascript:alert(1)", "mailto:a@b.example",
                                   "data:text/xml,<rss/>", "file:/etc/passwd"])
def test_add_of_another_scheme_without_slashes_is_refused_not_tried_as_a_host(
        tmp_path, capsys, typed):
    # it was tried as https://mailto:a@b.example (a DNS lookup of b.example)
    code, out, err = cli(capsys, "--db", "x.db", "add", typed)
    assert code == 1 and out == ""
    assert err.strip() == (f"aggregator: error: {typed}: only http:// and https:// URLs "
                           "can be followed")
    assert not (tmp_path / "feeds.opml").exists()


def test_a_host_with_a_port_and_no_scheme_is_still_tried_as_https(tmp_path, capsys):
    code, _, err = cli(capsys, "--db", "x.db", "add", "127.0.0.1:9/feed")
    assert code == 1 and "did you mean https://127.0.0.1:9/feed?" in err


ARTICLE = ("The bridge\nThe old bridge over the river closed on Monday for repairs. Engineers "
           "found cracks in two of its arches during a routine inspection. The council said "
           "the work would take six months and cost four million pounds. Buses will run a "
           "detour through the town centre until the bridge opens again. Shop owners near "
           "the bridge fear they will lose customers while it is closed.\n")


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-8-sig"])
def test_summarize_reads_text_its_byte_order_mark_names(tmp_path, capsys, encoding):
    # UTF-16 was refused as "binary data (NUL bytes)"
    plain, marked = tmp_path / "plain.txt", tmp_path / "marked.txt"
    plain.write_text(ARTICLE, encoding="utf-8")
    data = ARTICLE.encode(encoding)
    marked.write_bytes(data if encoding != "utf-16-be" else b"\xfe\xff" + data)
    code, out, err = cli(capsys, "summarize", "--json", str(plain), str(marked))
    assert code == 0, err
    first, second = out.splitlines()
    assert first.replace(str(plain), "F") == second.replace(str(marked), "F")
    assert "bridge" in first


def test_summarize_refuses_control_characters_that_happen_to_be_utf8(tmp_path, capsys):
    junk = tmp_path / "junk.txt"
    junk.write_bytes(bytes(range(1, 32)) * 200)
    code, out, err = cli(capsys, "summarize", str(junk))
    assert code == 1 and out == ""
    assert err.strip() == (f"aggregator: error: {junk}: binary data (control characters), "
                           "not text; not summarised")


def test_summarize_decodes_the_charset_an_html_page_declares(tmp_path, capsys):
    # the declared charset let the page through, then it was read as Windows-1252
    text = ("Старый мост через реку закрыли в понедельник на ремонт. Инженеры нашли "
            "трещины в двух арках во время проверки. Работы займут шесть месяцев. ")
    page = tmp_path / "page.html"
    page.write_bytes(b'<html><head><meta charset="koi8-r"><title>t</title></head><body>'
                     + f"<article><p>{text}</p><p>{text}</p></article>".encode("koi8-r")
                     + b"</body></html>")
    code, out, err = cli(capsys, "summarize", "--json", str(page))
    assert code == 0, err
    assert "мост" in out and "Ð" not in out and "Ñ" not in out
