"""The hostile DICOM corpus through `load_dicom`: each upload refused with a clear error, nothing written anywhere."""

from pathlib import Path

import pytest
from hostile_dicom import PHI, DicomCase, dicom_corpus

from unet3d.dicom import load_dicom

CASES = dicom_corpus()


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_hostile_upload_gets_a_clear_error_and_writes_nothing(case: DicomCase, tmp_path: Path):
    upload = tmp_path / "upload.zip"
    upload.write_bytes(case.content())
    if case.error is None:
        volume = load_dicom(upload, **case.limits)
        assert str(volume.shape) == case.fragment
    else:
        with pytest.raises(case.error) as raised:
            load_dicom(upload, **case.limits)
        message = str(raised.value)
        assert case.fragment in message
        assert type(raised.value) is case.error  # the exact class: it decides the HTTP status
        assert not any(identifier in message for identifier in PHI)
    # Members are read in memory, never extracted: the temp folder holds the upload alone.
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["upload.zip"]
