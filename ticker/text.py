"""Page bytes to the text a reader reads: decoded by the encoding the page declares (as
browsers do), and rendered from HTML the way a browser's "save as text" would."""

from __future__ import annotations

import codecs
import email.message
import re

_HTML_SNIFF = re.compile(
    rb"^(?:\xef\xbb\xbf)?\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*"
    rb"<(?:!doctype\s+html|html|head|body|meta|title|link|script|div|ul)\b",
    re.I | re.S,
)
_HTML_SNIFF_TEXT = re.compile(_HTML_SNIFF.pattern.decode("latin-1"), re.I | re.S)
_BLOCK_TAGS = frozenset(
    """address article aside blockquote body br dd details div dl dt fieldset figcaption figure
    footer form h1 h2 h3 h4 h5 h6 header hr li main nav ol p pre section summary table tbody
    td tfoot th thead tr ul option title marquee""".split()
)
_DROP_TAGS = ("script", "style", "noscript", "template", "svg", "head")


# Encodings a page may declare, as Python names: the WHATWG Encoding Standard's. Other
# codecs Python knows (utf-7, unicode_escape, rot13) are no page encodings.
_WEB_ENCODINGS = frozenset(
    """utf-8 utf-16 utf-16-le utf-16-be cp866 iso8859-2 iso8859-3 iso8859-4 iso8859-5
    iso8859-6 iso8859-7 iso8859-8 iso8859-10 iso8859-13 iso8859-14 iso8859-15 iso8859-16
    koi8-r koi8-u mac-roman mac-cyrillic cp874 cp1250 cp1251 cp1252 cp1253 cp1254 cp1255
    cp1256 cp1257 cp1258 gbk gb18030 big5 euc_jp iso2022_jp shift_jis euc_kr""".split()
)
# WHATWG reads these labels as other encodings: latin-1 and ASCII pages are windows-1252
# (whose 0x80-0x9f hold the ticker's bullet "\u2022", dashes and quotes), and so on.
_WEB_ALIASES = {
    "iso8859-1": "cp1252",
    "ascii": "cp1252",
    "iso8859-9": "cp1254",
    "iso8859-11": "cp874",
    "tis-620": "cp874",
    "gb2312": "gbk",
    "windows-874": "cp874",
    "x-mac-cyrillic": "mac-cyrillic",
}
_BOMS = ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"))
# <meta charset="x"> and <meta http-equiv="Content-Type" content="text/html; charset=x">
_META_CHARSET = re.compile(rb"<meta\s[^>]*?charset\s*=\s*[\"']?\s*([A-Za-z0-9._:-]{1,40})", re.I)
_META_SCAN = 64 * 1024  # where a <meta charset> may be: the head, not the whole page


def web_encoding(label: str | None) -> str | None:
    """The Python codec of an encoding label a page or server declares, or None when it
    names no page encoding."""
    if not label:
        return None
    label = label.strip().strip("\"'").lower()[:40]
    try:
        name = _WEB_ALIASES.get(label) or codecs.lookup(label).name
    except LookupError:
        return None
    name = _WEB_ALIASES.get(name, name)
    return name if name in _WEB_ENCODINGS else None


def _http_charset(content_type: str | None) -> str | None:
    if not content_type:
        return None
    header = email.message.Message()
    header["content-type"] = content_type
    return web_encoding(header.get_content_charset())


def page_encoding(body: bytes, content_type: str | None = None) -> tuple[str | None, int]:
    """The encoding a page declares, as the WHATWG Encoding Standard reads it, and the
    length of its byte-order mark: the byte-order mark wins; then the charset of the HTTP
    Content-Type; then, for HTML, a <meta charset>. None when the page declares none."""
    for bom, codec in _BOMS:
        if body.startswith(bom):
            return codec, len(bom)
    declared = _http_charset(content_type)
    if declared is None and looks_like_html(body, content_type):  # a text dump has no <meta>
        meta = _META_CHARSET.search(body, 0, _META_SCAN)
        declared = web_encoding(meta.group(1).decode("ascii")) if meta else None
        if declared is not None and declared.startswith("utf-16"):
            declared = "utf-8"  # a <meta> readable as ASCII is not in UTF-16 (WHATWG)
    return declared, 0


def looks_like_html(body: bytes | str, content_type: str | None = None) -> bool:
    if content_type:
        return "html" in content_type.lower()
    if isinstance(body, str):
        return _HTML_SNIFF_TEXT.match(body[:2048]) is not None
    return _HTML_SNIFF.match(body[:2048]) is not None


def decode(body: bytes, content_type: str | None = None) -> str:
    """Bytes to str in the encoding the page declares (page_encoding); else UTF-8 when the
    bytes are valid UTF-8, else windows-1252 (as browsers read an undeclared page). Bytes
    not valid in the encoding become U+FFFD: the ASCII ticker of a page declared wrongly
    survives."""
    codec, bom = page_encoding(body, content_type)
    if codec is not None:
        return body[bom:].decode(codec, errors="replace")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return body.decode("cp1252", errors="replace")


def html_to_text(body: bytes | str, content_type: str | None = None) -> str:
    """Render HTML to text the way a browser's 'save as text' would: blocks on lines.
    Bytes are decoded first (decode: the byte-order mark, the HTTP charset, the <meta
    charset>, then UTF-8 or windows-1252).

    The tree is only read, never modified, so odd characters in a page cannot upset lxml.
    """
    import lxml.etree
    import lxml.html

    text = body if isinstance(body, str) else decode(body, content_type)
    if not text.strip():
        return ""
    # libxml2 gets UTF-8 and is told so: it then ignores the page's own <meta charset>,
    # which decode has already honoured (or overruled, for a BOM or an HTTP charset).
    data = text.encode("utf-8", errors="replace")
    # huge_tree: libxml2 otherwise stops at ~256 nested elements and drops the rest.
    parser = lxml.html.HTMLParser(
        huge_tree=True, remove_comments=True, remove_pis=True, encoding="utf-8"
    )
    try:
        root = lxml.html.document_fromstring(data, parser=parser)
    except (lxml.etree.ParserError, ValueError):
        return ""
    out: list[str] = []
    walker = lxml.etree.iterwalk(root, events=("start", "end"))
    for event, el in walker:
        tag = el.tag
        name = tag.lower() if isinstance(tag, str) else ""
        if event == "start":
            if name in _DROP_TAGS:
                walker.skip_subtree()
                continue
            if name in _BLOCK_TAGS:
                out.append("\n")
            if el.text and name:
                out.append(el.text)
        else:
            if name in _BLOCK_TAGS:
                out.append("\n")
            if el.tail:
                out.append(el.tail)
    return "".join(out)


def page_text(body: bytes, content_type: str | None = None) -> str:
    """The text the parser reads: decoded, and through an HTML parser when it is HTML
    (by its Content-Type, else by how it starts once decoded: UTF-16 HTML too)."""
    text = decode(body, content_type)
    if looks_like_html(text, content_type):
        return html_to_text(text)
    return text
