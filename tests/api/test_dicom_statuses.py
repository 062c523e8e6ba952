"""The hostile DICOM corpus's expected HTTP statuses are the ones api/errors.py gives its errors."""

from hostile_dicom import dicom_corpus

from api.errors import status_for


def test_each_dicom_error_maps_to_the_status_the_corpus_expects():
    for case in dicom_corpus():
        if case.error is not None:
            assert status_for(case.error("x")) == case.status, case.id
