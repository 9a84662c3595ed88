#!/usr/bin/env bash
# Build the student and autograder editions of the assignments with Otter Assign.
#
#   scripts/build_assignments.sh [--out DIR] [--no-run-tests] [NAME ...]
#   scripts/build_assignments.sh --book-config FILE
#
# For each assignments/source/NAME.ipynb (all of them when no NAME is given) this writes
#   DIR/NAME/student/NAME.ipynb       the notebook to hand out (solutions and hidden tests removed)
#   DIR/NAME/autograder/NAME.ipynb    the solution notebook with every test
#   DIR/NAME/autograder.zip           the autograder configuration for `otter run` / `otter grade`
# DIR defaults to assignments/dist (ignored by git). Unless --no-run-tests is given, Otter
# Assign also grades the solution notebook and stops with an error below full marks.
#
# --book-config FILE writes a copy of the book's _config.yml with the sphinx-exercise option
# hide_solutions set, for a student edition of the book:
#   jupyter-book build . --config FILE --path-output _build/student
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/assignments/dist"
extra=()
names=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --out) out="$2"; shift 2 ;;
        --no-run-tests) extra+=(--no-run-tests); shift ;;
        --book-config)
            mkdir -p "$(dirname "$2")"
            python - "$root/_config.yml" "$2" <<'PY'
import sys
import yaml
config = yaml.safe_load(open(sys.argv[1], encoding="utf-8"))
config.setdefault("sphinx", {}).setdefault("config", {})["hide_solutions"] = True
with open(sys.argv[2], "w", encoding="utf-8") as f:
    f.write("# Generated from _config.yml by scripts/build_assignments.sh: solutions hidden.\n")
    yaml.safe_dump(config, f, sort_keys=False, allow_unicode=True)
PY
            echo "wrote $2; build with: jupyter-book build . --config $2 --path-output _build/student"
            exit 0 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        -*) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
        *) names+=("$1"); shift ;;
    esac
done
if [[ ${#names[@]} -eq 0 ]]; then
    for src in "$root"/assignments/source/*.ipynb; do names+=("$(basename "$src" .ipynb)"); done
fi
command -v otter >/dev/null || { echo "otter not found: pip install otter-grader ipykernel" >&2; exit 1; }

mkdir -p "$out"
out="$(cd "$out" && pwd)"
for name in "${names[@]}"; do
    src="$root/assignments/source/$name.ipynb"
    [[ -f "$src" ]] || { echo "no such assignment: $src" >&2; exit 1; }
    echo "== $name"
    rm -rf "${out:?}/$name"
    otter assign ${extra[@]+"${extra[@]}"} "$src" "$out/$name"
    zips=("$out/$name"/autograder/*-autograder_*.zip)
    cp "${zips[0]}" "$out/$name/autograder.zip"
    echo "   student edition: $out/$name/student/$name.ipynb"
    echo "   autograder:      $out/$name/autograder.zip"
done
