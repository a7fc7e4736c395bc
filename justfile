# Recipes for operators (the migration, step by step) and for developers.
# Every operator recipe is one `inmanta-migrate` subcommand; chain them as the
# maintenance window allows. `just --list` shows them all.

config := env_var_or_default("INMANTA_MIGRATE_CONFIG", "inmanta-migrate.toml")
bin := "cargo run --quiet --release --bin inmanta-migrate --"

# Show the recipes.
default:
    @just --list

# --- operators -------------------------------------------------------------

# Preflight: everything that can be checked before anything changes.
check *args:
    {{bin}} --config {{config}} check {{args}}

# What each remaining step would do.
plan:
    {{bin}} --config {{config}} plan

# Where the migration stands.
status:
    {{bin}} --config {{config}} status

# Before the window: the whole migration on a copy, nothing deployed
# (`just rehearse --clean` removes what a killed rehearsal left).
rehearse *args:
    {{bin}} --config {{config}} rehearse {{args}}

# The old side: inventory + halt, stop, dump. Stops at the first failure.
old-side:
    {{bin}} --config {{config}} halt-all
    {{bin}} --config {{config}} stop-server
    {{bin}} --config {{config}} dump

# The new side: restore, carry the files, start, reconcile every environment.
new-side *args:
    {{bin}} --config {{config}} restore
    {{bin}} --config {{config}} carry
    {{bin}} --config {{config}} start-server
    {{bin}} --config {{config}} env-reconcile {{args}}

# Online copy (copy.mode = "online"), before the window: copy the old database
# into the new one and keep it current (`just precopy --abandon` removes it).
precopy *args:
    {{bin}} --config {{config}} precopy {{args}}

# Online copy, in the window after halt-all and stop-server: cut the copy over.
# `just migrate` runs an online migration's steps in their order.
cutover:
    {{bin}} --config {{config}} cutover

# Everything, resumable, after a preflight and a confirmation.
migrate *args:
    {{bin}} --config {{config}} migrate {{args}}

# Reconcile one environment later (one that was halted before, or fixed).
reconcile env *args:
    {{bin}} --config {{config}} env-reconcile --env {{env}} {{args}}

# The way back to the old orchestrator (lists what is lost; `--force` to accept).
rollback *args:
    {{bin}} --config {{config}} rollback {{args}}

# The point of no return: the old server stopped and disabled for good.
finish *args:
    {{bin}} --config {{config}} finish {{args}}

# --- developers ------------------------------------------------------------

# The lab of real servers and the whole migration on it (the README's first command).
demo *args:
    cargo xtask demo {{args}}

# Everything CI runs (the README's second command).
ci:
    cargo xtask ci

# Fast tests only (no real servers).
test:
    cargo test --workspace

# Bring the lab up / show it / take it down.
lab-up *args:
    cargo xtask lab up {{args}}
lab-status:
    cargo xtask lab status
lab-down *args:
    cargo xtask lab down {{args}}

# Accept reviewed snapshot changes.
snapshots:
    cargo insta review
