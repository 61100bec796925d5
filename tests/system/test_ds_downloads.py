"""Downloads go only where DS's files live: a file URL on another host is never fetched.

The DS fake serves a dossier whose main document's URL names another host (`localhost`
instead of the fake's 127.0.0.1: the same fake behind it, so a download would work if tried).
PTCE_DS_FILE_HOSTS defaults to the DS API's host and DS's file host: the dossier is stored with
its document marked host_refused, the page rule says needs_review, and nothing is downloaded.
"""
import base64
import os

from test_ds_faults import FILES, downloads, settled, with_main_document  # noqa: F401 - fixture
from test_submission_ds import checks_of, deposit, make_dossier, wait_dossier


def test_file_on_another_host_is_not_downloaded(db, dsfake, downloads):  # noqa: F811
    with open(os.path.join(FILES, "ptce-4-pages.pdf"), "rb") as f:
        pdf = base64.b64encode(f.read()).decode()
    d = with_main_document(make_dossier(1001), {"contentBase64": pdf, "urlHost": "localhost"})
    number = deposit(dsfake, d)
    row = wait_dossier(db, number, timeout=20)
    document = row["document"]["main_document"]
    assert document["verification"] == "host_refused", document
    rule = checks_of(row["document"])["main_document.max_pages"]
    assert rule["outcome"] == "needs_review", rule
    settled(db, number)
    assert downloads() == 0, "a file outside PTCE_DS_FILE_HOSTS is never downloaded"
