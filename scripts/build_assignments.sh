#!/usr/bin/env bash
# Build the student and autograder editions of the assignments with Otter Assign.
#
#   scripts/build_assignments.sh [--out DIR] [--no-run-tests] [--torch SPEC] [--torch-index URL|none]
#                                [--package PATH] [NAME ...]
#   scripts/build_assignments.sh --book-config FILE
#   scripts/build_assignments.sh --export-private DIR
#   scripts/build_assignments.sh --export-public DIR
#
# For each assignments/source/NAME.ipynb (all of them when no NAME is given) this writes
#   DIR/NAME/student/NAME.ipynb       the notebook to hand out (solutions and hidden tests removed)
#   DIR/NAME/autograder/NAME.ipynb    the solution notebook with every test
#   DIR/NAME/autograder.zip           the autograder for `otter run`, grade.py and Gradescope
# DIR defaults to assignments/dist (ignored by git). Unless --no-run-tests is given, Otter
# Assign also grades the solution notebook and stops with an error below full marks.
#
# The zip's requirements (Gradescope installs them after otter-grader) are CPU torch and this
# package, shipped inside the zip as a wheel with its own dependencies:
#   --torch SPEC          the torch requirement (default "torch>=2.1")
#   --torch-index URL     where CPU builds of torch live (default the PyTorch CPU index;
#                         "none" leaves the line out, e.g. for a local mirror)
#   --package PATH        a checkout of diffusion-tutorial or its wheel (default: this repository)
#
# --book-config FILE writes a copy of the book's _config.yml with the sphinx-exercise option
# hide_solutions set, for a student edition of the book:
#   jupyter-book build . --config FILE --path-output _build/student
# --export-private DIR writes a private instructor repository: the sources (solutions and
# hidden tests), grade.py and this script, with a fresh random secret for the hidden inputs.
# --export-public DIR writes a copy of this repository's tracked files in which the sources are
# replaced by the student editions (assignments/student/NAME.ipynb): what students may see.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/assignments/dist"
torch_spec="torch>=2.1"
torch_index="https://download.pytorch.org/whl/cpu"
package="$root"
extra=()
names=()
python="${PYTHON:-python}"

export_private() {  # DIR
    local dest="$1"
    [[ -e "$dest" ]] && { echo "$dest exists: choose a new folder for the private repository" >&2; exit 1; }
    mkdir -p "$dest/assignments/source" "$dest/scripts"
    cp "$root"/assignments/source/*.ipynb "$dest/assignments/source/"
    cp "$root/assignments/grade.py" "$root/assignments/README.md" "$dest/assignments/"
    cp "$root/scripts/build_assignments.sh" "$dest/scripts/"
    printf 'assignments/dist/\n__pycache__/\n' > "$dest/.gitignore"
    "$python" - "$dest/assignments/source" <<'PY'
import pathlib, secrets, sys
for nb in pathlib.Path(sys.argv[1]).glob("*.ipynb"):
    text = nb.read_text(encoding="utf-8")
    nb.write_text(text.replace('secret: \\"\\"', f'secret: \\"{secrets.token_hex(16)}\\"', 1), encoding="utf-8")
PY
    if command -v git >/dev/null; then
        git -C "$dest" init -q && git -C "$dest" add -A \
            && git -C "$dest" -c user.name=instructor -c user.email=instructor@localhost \
                commit -q -m "Assignments with solutions and hidden tests (private)"
    fi
    echo "wrote the private instructor repository $dest; build in it with"
    echo "  scripts/build_assignments.sh --package PATH_TO_diffusion-tutorial"
}

export_public() {  # DIR
    local dest="$1" tmp
    [[ -e "$dest" ]] && { echo "$dest exists: choose a new folder for the public copy" >&2; exit 1; }
    mkdir -p "$dest"
    git -C "$root" archive HEAD | tar -x -C "$dest"
    tmp="$(mktemp -d)"
    "$0" --out "$tmp" --no-run-tests --torch-index none >/dev/null
    rm -rf "$dest/assignments/source"
    mkdir -p "$dest/assignments/student"
    for nb in "$tmp"/*/student/*.ipynb; do cp "$nb" "$dest/assignments/student/"; done
    rm -rf "$tmp"
    echo "wrote $dest: this repository with student editions only (assignments/student/)"
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --out) out="$2"; shift 2 ;;
        --no-run-tests) extra+=(--no-run-tests); shift ;;
        --torch) torch_spec="$2"; shift 2 ;;
        --torch-index) torch_index="$2"; shift 2 ;;
        --package) package="$2"; shift 2 ;;
        --export-private) export_private "$2"; exit 0 ;;
        --export-public) export_public "$2"; exit 0 ;;
        --book-config)
            mkdir -p "$(dirname "$2")"
            "$python" - "$root/_config.yml" "$2" <<'PY'
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
        -h|--help) sed -n '2,32p' "$0"; exit 0 ;;
        -*) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
        *) names+=("$1"); shift ;;
    esac
done
if [[ ${#names[@]} -eq 0 ]]; then
    for src in "$root"/assignments/source/*.ipynb; do names+=("$(basename "$src" .ipynb)"); done
fi
command -v otter >/dev/null || { echo "otter not found: pip install otter-grader ipykernel" >&2; exit 1; }

build="$(mktemp -d)"
trap 'rm -rf "$build"' EXIT
mkdir -p "$build/wheels"
# The package's wheel, built from a clean copy (no stale build/ folder) or taken as given.
if [[ -f "$package" && "$package" == *.whl ]]; then
    cp "$package" "$build/wheels/"
elif [[ -f "$package/pyproject.toml" && -d "$package/diffusion_tutorial" ]]; then
    mkdir -p "$build/package"
    cp "$package/pyproject.toml" "$package/README.md" "$build/package/"
    (cd "$package" && tar --exclude=__pycache__ -cf - diffusion_tutorial) | tar -xf - -C "$build/package"
    isolation=(--no-build-isolation)
    "$python" -c "import setuptools" 2>/dev/null || isolation=()
    "$python" -m pip wheel -q --no-deps ${isolation[@]+"${isolation[@]}"} -w "$build/wheels" "$build/package" >&2
else
    echo "no package to ship in the autograder: pass --package PATH (a checkout of diffusion-tutorial or its wheel)" >&2
    exit 1
fi
wheel="$(basename "$(ls "$build"/wheels/*.whl)")"

mkdir -p "$out"
out="$(cd "$out" && pwd)"
for name in "${names[@]}"; do
    src="$root/assignments/source/$name.ipynb"
    [[ -f "$src" ]] || { echo "no such assignment: $src" >&2; exit 1; }
    echo "== $name"
    work="$build/$name"
    mkdir -p "$work"
    cp "$src" "$work/"
    cp -r "$build/wheels" "$work/"
    {
        echo "# The autograder's Python packages; Otter adds otter-grader. Gradescope unpacks the zip"
        echo "# into /autograder/source, so the package's wheel lies under files/wheels there."
        [[ "$torch_index" != none ]] && echo "--extra-index-url $torch_index"
        echo "$torch_spec"
        echo "/autograder/source/files/wheels/$wheel"
    } > "$work/requirements.txt"
    rm -rf "${out:?}/$name"
    (cd "$work" && otter assign ${extra[@]+"${extra[@]}"} "$name.ipynb" "$out/$name")
    zips=("$out/$name"/autograder/*-autograder_*.zip)
    cp "${zips[0]}" "$out/$name/autograder.zip"
    echo "   student edition: $out/$name/student/$name.ipynb"
    echo "   autograder:      $out/$name/autograder.zip"
done
