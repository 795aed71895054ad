#!/usr/bin/env bash
# Builds examples/ (for the bare-metal target, without the image feature)
# and checks that the README shows examples/ownership.rs verbatim, and that
# the crate docs (src/lib.rs) still include it (they include_str! the file,
# so its doctest is the example itself). Prints one "test ... ok|FAILED"
# line per check.
set -uo pipefail
cd "$(dirname "$0")/.."
if cargo build --release --no-default-features --example ownership 2>&1 | tail -n 20; then
    echo "test example_ownership_builds ... ok"
else
    echo "test example_ownership_builds ... FAILED"
fi
shown=$(sed -n '/^<!-- example: examples\/ownership.rs -->$/,/^<!-- end example -->$/p' README.md | sed '1,2d;$d' | sed '$d')
if [ "$shown" = "$(cat examples/ownership.rs)" ]; then
    echo "test readme_shows_examples_ownership ... ok"
else
    echo "test readme_shows_examples_ownership ... FAILED"
    diff <(echo "$shown") examples/ownership.rs | head -n 20
fi
if grep -qxF '#![doc = include_str!("../examples/ownership.rs")]' src/lib.rs; then
    echo "test crate_docs_show_examples_ownership ... ok"
else
    echo "test crate_docs_show_examples_ownership ... FAILED"
fi
