#!/usr/bin/env bash
# The test command: brings the local services up if needed, then runs the whole suite
# against the real RabbitMQ (and PostgreSQL). Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh
cargo test --locked "$@"
