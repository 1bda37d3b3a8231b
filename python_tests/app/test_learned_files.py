"""LearnedZO files: a damaged file is a one-line error naming it, and a save never leaves half a file."""
import pytest
import torch

from zol2l_ext.zo import LearnedZO
from zol2l_ext.zo.lstm_optimizer import PRETRAINED_DIR


@pytest.fixture
def good(tmp_path):
    path = tmp_path / "w.pt"
    LearnedZO(scaling="rms", step=0.1).save(path)
    return path


def test_truncated_file_is_one_line_naming_it(good, tmp_path):
    bad = tmp_path / "cut.pt"
    bad.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ValueError) as e:
        LearnedZO.load(bad)
    msg = str(e.value)
    assert str(bad) in msg and "not a readable LearnedZO file" in msg and "\n" not in msg


def test_file_of_another_kind_is_named(tmp_path):
    other = tmp_path / "other.pt"
    torch.save({"format": "something-else"}, other)
    with pytest.raises(ValueError, match="other.pt: not a LearnedZO checkpoint"):
        LearnedZO.load(other)


def test_missing_file_stays_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        LearnedZO.load(tmp_path / "absent.pt")


def test_failed_save_keeps_the_previous_file(good, monkeypatch):
    before = good.read_bytes()

    def full_disk(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(ValueError, match="No space left"):
        LearnedZO(scaling="rms", step=0.5).save(good)
    assert good.read_bytes() == before
    assert sorted(p.name for p in good.parent.iterdir()) == ["w.pt"]  # no temporary file left


def test_shipped_files_still_load():
    for name in LearnedZO.available_pretrained():
        assert isinstance(LearnedZO.load(PRETRAINED_DIR / f"{name}.pt"), LearnedZO)
