# Shared settings for the project's scripts (sourced, not run).
# Per-machine caches, reused across clones and by CI; nothing depends on them existing.
: "${M2M_CACHE_DIR:=${XDG_CACHE_HOME:-$HOME/.cache}/m2m}"
: "${CARGO_TARGET_DIR:=$M2M_CACHE_DIR/target}"
export M2M_CACHE_DIR CARGO_TARGET_DIR
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
