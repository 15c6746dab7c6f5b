#!/bin/sh
# Image Mode Portal agent: reports this host's `bootc status` to the portal and carries out the actions the portal
# holds for it (upgrade, switch, rollback, reboot), posting their output into the action's log.
#
# No daemon: portal-agent.timer runs it every minute. It needs sh, curl, sha256sum and bootc. Its settings are in
# /etc/portal-agent/agent.conf (PORTAL_URL, ENROLLMENT_TOKEN; optional HOST_NAME, HEARTBEAT_SECONDS, CURL_OPTS);
# what it learns (its credential, the last status it sent) in /var/lib/portal-agent, readable by root only.
#
# On its first run it enrolls with the token and keeps the credential the portal answers with; the token is not
# needed again. Then, on every run, it reads `bootc status --format=json` and posts it when it changed, or when
# HEARTBEAT_SECONDS passed since the last post (the portal learns the host is alive, and answers whether actions wait).
# Every RUNTIME_SECONDS (an hour by default) it also posts what changed on the host since it booted its image: the
# output of `ostree admin config-diff` and of the portal's package script (the one the portal runs over SSH).
set -u
CONF=${PORTAL_AGENT_CONF:-/etc/portal-agent/agent.conf}
STATE=${PORTAL_AGENT_STATE:-/var/lib/portal-agent}
umask 077

say() { echo "portal-agent: $*" >&2; }

[ -r "$CONF" ] || { say "$CONF is missing: it says where the portal is (PORTAL_URL) and how to enroll."; exit 1; }
# shellcheck disable=SC1090
. "$CONF"
[ -n "${PORTAL_URL:-}" ] || { say "PORTAL_URL is not set in $CONF"; exit 1; }
HEARTBEAT_SECONDS=${HEARTBEAT_SECONDS:-60}
HOST_NAME=${HOST_NAME:-$(hostname)}
RUNTIME_SECONDS=${RUNTIME_SECONDS:-3600}
# The portal fills this in when it hands the agent out (hosts/agent_dist.py: portal/packages.py's PACKAGE_SCRIPT).
PACKAGE_SCRIPT=@PACKAGE_SCRIPT@
API="${PORTAL_URL%/}/agent/v1"
mkdir -p "$STATE" && chmod 700 "$STATE" || exit 1

# POST to the portal: request PATH [curl options]. The answer's body is in $STATE/response, its status in HTTP_CODE.
request() {
    path=$1
    shift
    # CURL_OPTS holds options such as --cacert FILE: split on purpose.
    # shellcheck disable=SC2086
    HTTP_CODE=$(curl -sS --max-time 120 ${CURL_OPTS:-} -o "$STATE/response" -w '%{http_code}' -X POST "$@" \
        "$API$path") || { say "cannot reach $API"; HTTP_CODE=000; return 1; }
}

# A field of the portal's flat JSON answer: field NAME.
field() {
    sed -n "s/.*\"$1\": *\"\{0,1\}\([^\",}]*\)\"\{0,1\}.*/\1/p" "$STATE/response" | head -n 1
}

enroll() {
    [ -n "${ENROLLMENT_TOKEN:-}" ] || { say "no credential yet and no ENROLLMENT_TOKEN in $CONF"; exit 1; }
    printf '{"token": "%s", "name": "%s"}' "$ENROLLMENT_TOKEN" "$HOST_NAME" > "$STATE/enroll.json"
    request /enroll -H 'Content-Type: application/json' --data-binary @"$STATE/enroll.json"
    rm -f "$STATE/enroll.json"
    [ "$HTTP_CODE" = 201 ] || { say "enrollment refused ($HTTP_CODE): $(field error)"; exit 1; }
    # The credential goes into a header file, so that it never shows on a command line.
    printf 'Authorization: Bearer %s\n' "$(field credential)" > "$STATE/auth.new" && mv "$STATE/auth.new" "$STATE/auth"
    say "enrolled as $HOST_NAME$( [ "$(field approved)" = true ] || echo '; waiting for an admin to approve it')"
}

# Post the status when it changed or the heartbeat is due (or always, with "force"). Sets ACTIONS.
report() {
    ACTIONS=0
    if ! bootc status --format=json > "$STATE/status.json" 2> "$STATE/status.err"; then
        say "bootc status failed: $(tail -n 1 "$STATE/status.err")"
        [ -s "$STATE/status.json" ] || cp "$STATE/status.err" "$STATE/status.json"
    fi
    hash=$(sha256sum < "$STATE/status.json" | cut -d ' ' -f 1)
    now=$(date +%s)
    last_hash=$(cat "$STATE/last_hash" 2>/dev/null)
    last_sent=$(cat "$STATE/last_sent" 2>/dev/null || echo 0)
    if [ "${1:-}" != force ] && [ "$hash" = "$last_hash" ] && [ $((now - last_sent)) -lt "$HEARTBEAT_SECONDS" ]; then
        return 0
    fi
    request /status -H @"$STATE/auth" -H 'Content-Type: application/json' --data-binary @"$STATE/status.json" ||
        return 1
    case $HTTP_CODE in
        200)
            echo "$hash" > "$STATE/last_hash"
            echo "$now" > "$STATE/last_sent"
            ACTIONS=$(field actions)
            ;;
        *)
            rm -f "$STATE/last_hash"
            say "status refused ($HTTP_CODE): $(field error)"
            return 1
            ;;
    esac
}

# Post what changed on the host since it booted (files in /etc, packages), when RUNTIME_SECONDS passed since the last
# post. Each section starts with a line "#portal-agent <name>"; a command that fails says so on such a line.
report_runtime() {
    now=$(date +%s)
    last=$(cat "$STATE/runtime_sent" 2>/dev/null || echo 0)
    [ $((now - last)) -ge "$RUNTIME_SECONDS" ] || return 0
    {
        echo '#portal-agent config-diff'
        ostree admin config-diff 2> "$STATE/runtime.err" ||
            echo "#portal-agent failed: ostree admin config-diff: $(tail -n 1 "$STATE/runtime.err")"
        echo '#portal-agent packages'
        sh -c "$PACKAGE_SCRIPT" 2> "$STATE/runtime.err" ||
            echo "#portal-agent failed: the package list: $(tail -n 1 "$STATE/runtime.err")"
    } > "$STATE/runtime.txt"
    request /runtime -H @"$STATE/auth" -H 'Content-Type: text/plain' --data-binary @"$STATE/runtime.txt" || return 1
    if [ "$HTTP_CODE" = 200 ]; then
        echo "$now" > "$STATE/runtime_sent"
    else
        say "runtime report refused ($HTTP_CODE): $(field error)"
        return 1
    fi
}

# Post what the action printed since byte $2 of its output, in whole lines: a line still being written waits for its
# end, unless it passed 64 KiB or the command ended ($3 = final). Prints how far it got.
send_log() {
    size=$(wc -c < "$STATE/action.out")
    if [ "$size" -gt "$2" ]; then
        tail -c +$(($2 + 1)) "$STATE/action.out" | head -c $((size - $2)) > "$STATE/action.chunk"
        if [ "${3:-}" != final ] && [ "$(tail -c 1 "$STATE/action.chunk" | wc -l)" -eq 0 ]; then
            whole=$(sed '$d' "$STATE/action.chunk" | wc -c)
            if [ $((size - $2 - whole)) -le 65536 ]; then
                head -c "$whole" "$STATE/action.chunk" > "$STATE/action.lines"
                mv "$STATE/action.lines" "$STATE/action.chunk"
                size=$(($2 + whole))
            fi
        fi
        if [ -s "$STATE/action.chunk" ]; then
            request "/actions/$1/log" -H @"$STATE/auth" -H 'Content-Type: text/plain' \
                --data-binary @"$STATE/action.chunk" || true
        fi
    fi
    echo "$size"
}

# Ask for the actions the portal holds, one at a time, and carry each out.
run_actions() {
    while :; do
        request /actions/next -H @"$STATE/auth" -d '' || return 1
        [ "$HTTP_CODE" = 200 ] || { say "could not ask for actions ($HTTP_CODE): $(field error)"; return 1; }
        id=$(field action)
        case $id in '' | null) return 0 ;; esac
        kind=$(field kind)
        image=$(field image)
        reboot=0
        case $kind in
            upgrade_check) set -- bootc upgrade --check ;;
            upgrade_stage) set -- bootc upgrade ;;
            upgrade_apply) set -- bootc upgrade; reboot=1 ;;
            switch) set -- bootc switch "$image" ;;
            switch_apply) set -- bootc switch "$image"; reboot=1 ;;
            rollback) set -- bootc rollback ;;
            rollback_apply) set -- bootc rollback; reboot=1 ;;
            reboot) set -- true; reboot=1 ;;
            *) set -- sh -c "echo 'this agent does not know the action $kind' >&2; exit 2" ;;
        esac
        say "action $id ($kind): $*"
        : > "$STATE/action.out"
        "$@" > "$STATE/action.out" 2>&1 &
        pid=$!
        sent=0
        while kill -0 "$pid" 2>/dev/null; do
            sleep 2
            sent=$(send_log "$id" "$sent")
        done
        wait "$pid"
        status=$?
        sent=$(send_log "$id" "$sent" final)
        [ "$status" -eq 0 ] || reboot=0
        request "/actions/$id/finish?exit=$status&rebooting=$reboot" -H @"$STATE/auth" -d '' ||
            say "could not report how action $id ended"
        if [ "$reboot" = 1 ]; then
            say "rebooting, as action $id asked"
            systemctl reboot
            exit 0
        fi
        report force || return 1
    done
}

[ -s "$STATE/auth" ] || enroll
report || exit 1
report_runtime
if [ "${ACTIONS:-0}" != 0 ]; then
    run_actions
fi
exit 0
