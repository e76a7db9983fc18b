#!/usr/bin/env bash
# Regenerate the explain-page screenshots in docs/: a vit_nano trained for 5 epochs on
# fashion-mnist-mini (docs/explain.png) and a Hugging Face ViT imported from a save_pretrained
# folder (docs/explain_hf.png; random init, nothing downloaded, so its maps show the mechanics,
# not a trained model). Needs Debian's chromium and chromium-driver, selenium and transformers.
#
# Usage: bash scripts/screenshots.sh
set -euo pipefail
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

vitlens train vit_nano --epochs 5 --quiet --out "$work/vit"
vitlens explain "$work/vit" --out "$work/explain"
python scripts/screenshot_page.py "$work/explain/explain.html" docs/explain.png \
    --block 4 --click 3,3

python - "$work/hf" <<'EOF'
import sys

import torch
import transformers

torch.manual_seed(0)
config = transformers.ViTConfig(
    image_size=56, patch_size=4, num_channels=1, hidden_size=96, num_hidden_layers=6,
    num_attention_heads=3, intermediate_size=192, num_labels=10,
)
transformers.ViTForImageClassification(config).save_pretrained(sys.argv[1])
EOF
vitlens import "hf:$work/hf" --dataset fashion-mnist-mini --out "$work/hf-run"
vitlens explain "$work/hf-run" --out "$work/explain-hf"
python scripts/screenshot_page.py "$work/explain-hf/explain.html" docs/explain_hf.png \
    --block 2 --click 7,7
