# Shared settings for the project's scripts (sourced, not run).
# The cargo target directory is cargo's own choice — `./target`, or `CARGO_TARGET_DIR` when set —
# so that `cargo run`, `cargo build` and these scripts share one build. `.ci/run` points
# CARGO_TARGET_DIR at the per-machine cache so that every clean clone CI makes reuses one build;
# export the same in your shell to share that build with CI.
# Per-machine tool caches live under M2M_CACHE_DIR; nothing depends on them existing.
: "${M2M_CACHE_DIR:=${XDG_CACHE_HOME:-$HOME/.cache}/m2m}"
export M2M_CACHE_DIR
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
