#!/bin/sh
# Redis container entrypoint: render the ACL file from the template and $REDIS_PASSWORD, then hand
# over to the official image's entrypoint (which drops root for the `redis` user).
#
# Why: redis.conf cannot expand environment variables, and a password passed as
# `--requirepass ...` is visible to anyone who can run `ps` or `docker inspect` on the host. The
# rendered file lives on a tmpfs, is readable only by the server, holds the SHA-256 of the password
# (never the password) and is rebuilt from the environment on every start.
#
# Variables: REDIS_PASSWORD (required), REDIS_ACL_TEMPLATE and REDIS_ACL_FILE (paths; defaults
# match docker-compose.yml and redis.conf's `aclfile`). The ACL file's directory is dedicated to
# it: it is handed to the `redis` user, which must be able to read (and `ACL SAVE`) the file.
set -eu

template="${REDIS_ACL_TEMPLATE:-/usr/local/etc/redis/users.acl.template}"
aclfile="${REDIS_ACL_FILE:-/run/redis/users.acl}"

if [ -z "${REDIS_PASSWORD:-}" ]; then
    echo "entrypoint: REDIS_PASSWORD is empty; refusing to start Redis without a password" >&2
    exit 1
fi

digest="$(printf '%s' "$REDIS_PASSWORD" | sha256sum | cut -d ' ' -f 1)"

umask 077
mkdir -p "$(dirname "$aclfile")"
# Drop comments and blank lines, join each user's indented rule lines onto its `user` line,
# then put the password's digest in place of the placeholder.
awk '
    /^[[:space:]]*#([[:space:]]|$)/ || /^[[:space:]]*$/ { next }
    /^[[:space:]]/ { sub(/^[[:space:]]+/, ""); sub(/[[:space:]]+$/, ""); line = line " " $0; next }
    { if (line != "") print line; line = $0; sub(/[[:space:]]+$/, "", line) }
    END { if (line != "") print line }
' "$template" | sed "s/#@GATEWAY_PASSWORD_SHA256@/#$digest/" > "$aclfile.tmp"
mv "$aclfile.tmp" "$aclfile"
if id redis >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    chown redis "$(dirname "$aclfile")" "$aclfile"
fi
unset digest

if command -v docker-entrypoint.sh >/dev/null 2>&1; then
    exec docker-entrypoint.sh "$@"
fi
exec "$@"
