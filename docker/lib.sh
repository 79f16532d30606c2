# Shell helpers for the compose stack, sourced by scripts/build-images,
# scripts/compose-test and docker/wait-healthy.
#
# `compose ARGS...` runs Compose v2 (`docker compose`) when the Docker CLI
# has it, else the standalone `docker-compose` (v1.29, Debian 12's
# package), against compose.yaml at the repository root, with
# compose.secure.yaml over it when RUNNEL_COMPOSE_SECURE is set.

# The repository root (this file lives in docker/).
runnel_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

compose() {
    local files=(-f "$runnel_root/compose.yaml")
    if [ -n "${RUNNEL_COMPOSE_SECURE:-}" ]; then
        files+=(-f "$runnel_root/compose.secure.yaml")
    fi
    if docker compose version >/dev/null 2>&1; then
        docker compose "${files[@]}" "$@"
    elif command -v docker-compose >/dev/null 2>&1; then
        docker-compose "${files[@]}" "$@"
    else
        echo "error: neither 'docker compose' nor 'docker-compose' is installed" >&2
        return 1
    fi
}

# wait_healthy SECONDS SERVICE...: waits until each service's container
# reports healthy (what `docker compose up --wait` does), failing after
# SECONDS with the state it saw.
wait_healthy() {
    local limit=$1
    shift
    local deadline=$((SECONDS + limit)) service id state
    for service in "$@"; do
        while :; do
            id=$(compose ps -q "$service" 2>/dev/null || true)
            state=none
            if [ -n "$id" ]; then
                state=$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$id" 2>/dev/null || echo gone)
            fi
            [ "$state" = healthy ] && break
            if [ "$SECONDS" -ge "$deadline" ]; then
                echo "error: $service is not healthy after ${limit}s (state: $state)" >&2
                return 1
            fi
            sleep 1
        done
    done
}
