"""Writes the document corpus used by the local-documents tests into tests/data/docs/.

Each document holds one or two distinctive facts; QUESTIONS pairs a question with the file
whose text answers it. Run it again after changing the facts: `python tests/data/make_docs_corpus.py`.
The PDF and DOCX files are written by hand-rolled minimal writers, so nothing but the
standard library is needed.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "docs"

FILLER = ("This note is part of the internal knowledge base of the Harbourline cooperative. "
          "It was reviewed by the documentation team and applies to all members.")

DOCS = [
    ("handbook/bakery.md", "The Lindqvist bakery", "The Lindqvist bakery opens at 6:30 on weekdays and bakes cardamom buns every Friday.",
     "When does the Lindqvist bakery open on weekdays?"),
    ("handbook/parking.txt", "Parking", "Visitors park in the blue garage on Ferry Street; the first two hours are free.",
     "Where should visitors park?"),
    ("handbook/wifi.rst", "Wi-Fi", "The guest Wi-Fi network is called Harbour-Guest and its password changes every Monday.",
     "How often does the guest Wi-Fi password change?"),
    ("handbook/holidays.md", "Holidays", "Members get twenty-six days of paid leave, plus the midsummer holiday.",
     "How many days of paid leave do members get?"),
    ("handbook/security.html", "Security desk", "The security desk is staffed around the clock; the emergency extension is 4477.",
     "What is the emergency extension of the security desk?"),
    ("handbook/kitchen.txt", "Kitchen", "The shared kitchen dishwasher runs automatically at 21:00 each evening.",
     "When does the kitchen dishwasher run?"),
    ("projects/orca.md", "Project Orca", "Project Orca builds a tide prediction service; its lead engineer is Amara Osei.",
     "Who is the lead engineer of Project Orca?"),
    ("projects/heron.docx", "Project Heron", "Project Heron replaces the old ticket system and launches on 3 March.",
     "When does Project Heron launch?"),
    ("projects/puffin.pdf", "Project Puffin", "Project Puffin measures sea ice with drones flown from Tromsø.",
     "Where are Project Puffin's drones flown from?"),
    ("projects/kelp.html", "Kelp farm", "The kelp farm trial harvested 840 kilograms of sugar kelp in its first season.",
     "How much sugar kelp did the kelp farm trial harvest?"),
    ("projects/lighthouse.txt", "Lighthouse restoration", "The lighthouse restoration budget is 1.2 million crowns, funded by the county.",
     "What is the lighthouse restoration budget?"),
    ("projects/seal_count.md", "Seal count", "Volunteers counted 212 grey seals on the outer skerries last August.",
     "How many grey seals were counted on the outer skerries?"),
    ("recipes/fish_soup.md", "Fish soup", "The cooperative fish soup uses saffron, fennel and a splash of aquavit.",
     "What spirit goes into the cooperative fish soup?"),
    ("recipes/rye_bread.txt", "Rye bread", "The rye bread dough rests for fourteen hours before baking at 220 degrees.",
     "How long does the rye bread dough rest?"),
    ("recipes/lingonberry.docx", "Lingonberry jam", "Lingonberry jam is cooked with half as much sugar as berries by weight.",
     "How much sugar goes into the lingonberry jam?"),
    ("recipes/pancakes.pdf", "Pancakes", "Thursday pancakes are served with pea soup and whipped cream.",
     "What are Thursday pancakes served with?"),
    ("code/tide_model.py", "Tide model", "The tide model uses a harmonic series with thirty-seven constituents.",
     "How many constituents does the tide model use?"),
    ("code/backup.sh", "Backups", "Nightly backups are copied to the vault server named Skarv at 02:15.",
     "What is the name of the backup vault server?"),
    ("code/config.yaml", "Settings", "The sensor polling interval is set to ninety seconds in production.",
     "What is the sensor polling interval in production?"),
    ("meetings/2026-01.md", "January meeting", "In January the board chose Ingrid Halvorsen as the new treasurer.",
     "Who became the new treasurer in January?"),
    ("meetings/2026-02.txt", "February meeting", "In February members voted to buy a second electric ferry named Måsen.",
     "What is the name of the second electric ferry?"),
    ("meetings/2026-03.html", "March meeting", "The March meeting moved the annual regatta to the second weekend of June.",
     "When is the annual regatta?"),
    ("meetings/2026-04.docx", "April meeting", "In April the cooperative signed a solar panel deal covering all nine boathouses.",
     "How many boathouses does the solar panel deal cover?"),
    ("meetings/2026-05.pdf", "May meeting", "The May meeting approved a library of two hundred board games in the clubhouse.",
     "How many board games will the clubhouse library hold?"),
    ("faq/membership.md", "Membership", "A family membership costs 900 crowns per year and includes two kayak rentals.",
     "How much does a family membership cost per year?"),
    ("faq/kayaks.txt", "Kayaks", "Kayaks must be returned before sunset and rinsed with fresh water.",
     "What must be done to kayaks after use?"),
    ("faq/sauna.rst", "Sauna", "The sea sauna is heated with birch wood and opens on Wednesdays and Saturdays.",
     "On which days does the sea sauna open?"),
    ("faq/newsletter.html", "Newsletter", "The newsletter, Tidewater Notes, is emailed on the first day of each month.",
     "What is the newsletter called?"),
]

BROKEN = {
    "broken/empty.txt": b"",
    "broken/binary.md": b"\x00\x01\x02\x03 binary \x00 data" * 20,
    "broken/corrupt.pdf": b"%PDF-1.4\n this is not really a pdf \x00\x00 garbage",
    "broken/corrupt.docx": b"PK\x03\x04 not a real zip archive",
    "broken/picture.png": b"\x89PNG\r\n\x1a\n" + b"\x00" * 64,
}


def _paragraphs(title: str, fact: str) -> list[str]:
    return [fact, FILLER, f"Questions about {title.lower()} go to the members' office."]


def _pdf(path: Path, title: str, lines: list[str]) -> None:
    """A minimal one-page PDF with real text (Helvetica), readable by any PDF library."""
    def esc(s: str) -> str:
        return s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    text = ["BT /F1 12 Tf 50 780 Td 14 TL", f"({esc(title)}) Tj T*"]
    for line in lines:
        words, current = line.split(), ""
        for word in words:
            if len(current) + len(word) > 85:
                text.append(f"({esc(current.strip())}) Tj T*")
                current = ""
            current += word + " "
        text.append(f"({esc(current.strip())}) Tj T* T*")
    text.append("ET")
    stream = "\n".join(text).encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    path.write_bytes(bytes(out))


def _docx(path: Path, title: str, paragraphs: list[str]) -> None:
    """A minimal DOCX: a Title-styled heading and plain paragraphs."""
    from xml.sax.saxutils import escape

    body = (f'<w:p><w:pPr><w:pStyle w:val="Heading1"/></w:pPr><w:r><w:t>{escape(title)}</w:t></w:r></w:p>'
            + "".join(f"<w:p><w:r><w:t>{escape(p)}</w:t></w:r></w:p>" for p in paragraphs))
    document = ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
                '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
                f"<w:body>{body}</w:body></w:document>")
    types = ('<?xml version="1.0" encoding="UTF-8"?>'
             '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
             '<Default Extension="xml" ContentType="application/xml"/>'
             '<Override PartName="/word/document.xml" '
             'ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/>'
             "</Types>")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", types)
        archive.writestr("word/document.xml", document)


def write(out: Path = OUT) -> None:
    """Write every document, broken file and the question set."""
    questions = []
    for name, title, fact, question in DOCS:
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        paragraphs = _paragraphs(title, fact)
        suffix = path.suffix
        if suffix == ".pdf":
            _pdf(path, title, paragraphs)
        elif suffix == ".docx":
            _docx(path, title, paragraphs)
        elif suffix == ".html":
            body = "".join(f"<p>{p}</p>" for p in paragraphs)
            path.write_text(f"<html><head><title>{title}</title><style>p {{color: red}}</style>"
                            f"<script>var hidden = 'never indexed';</script></head>"
                            f"<body><h1>{title}</h1>{body}</body></html>", encoding="utf-8")
        elif suffix == ".md":
            path.write_text(f"# {title}\n\n" + "\n\n".join(paragraphs) + "\n", encoding="utf-8")
        elif suffix == ".rst":
            path.write_text(f"{title}\n{'=' * len(title)}\n\n" + "\n\n".join(paragraphs) + "\n", encoding="utf-8")
        elif suffix == ".py":
            path.write_text(f'"""{title}.\n\n' + "\n\n".join(paragraphs) + '\n"""\n\nCONSTITUENTS = 37\n',
                            encoding="utf-8")
        elif suffix == ".sh":
            path.write_text("#!/bin/sh\n" + "".join(f"# {p}\n" for p in paragraphs) + "rsync -a /data skarv:/vault\n",
                            encoding="utf-8")
        elif suffix == ".yaml":
            path.write_text("".join(f"# {p}\n" for p in paragraphs) + "sensor:\n  polling_seconds: 90\n",
                            encoding="utf-8")
        else:
            path.write_text(f"{title}\n\n" + "\n\n".join(paragraphs) + "\n", encoding="utf-8")
        questions.append({"question": question, "file": name})
    for name, data in BROKEN.items():
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (HERE / "docs_questions.json").write_text(json.dumps(questions, indent=1, ensure_ascii=False) + "\n",
                                               encoding="utf-8")


if __name__ == "__main__":
    write()
    print(f"wrote {len(DOCS)} documents, {len(BROKEN)} broken files and {len(DOCS)} questions")
