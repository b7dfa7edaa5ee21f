# Background processes (the processes setting): each NAME runs COUNT instances of a
# command from the current release, as the app user with the app's environment, under
# systemd (template unit fabstack-$APP.NAME@.service, instances 1..COUNT), supervisor
# (program fabstack-$APP.NAME, numprocs COUNT) or nohup (root's records
# $STATE/bg-NAME.I.pid). A stop is graceful: TERM to each instance's main process (a
# Celery worker finishes its running tasks), KILL after its stop timeout. A restart
# stops every instance before it starts any: never two releases' workers at once.
#
# Set before use: APP, APP_ENV, CURRENT, STATE, LOGS; live, as_app, spawn_as_app (common.sh).

# read_background: `bg.NAME=MANAGER PID...` for every process this app has on the host.
read_background() {
    for f in /etc/systemd/system/"fabstack-$APP".*@.service; do
        [ -f "$f" ] || continue
        n=${f##*/"fabstack-$APP".}
        n=${n%@.service}
        echo "bg.$n=systemd $(bg_pids "$n" systemd | tr '\n' ' ')"
    done
    for f in /etc/supervisor/conf.d/"fabstack-$APP".*.conf; do
        [ -f "$f" ] || continue
        n=${f##*/"fabstack-$APP".}
        n=${n%.conf}
        echo "bg.$n=supervisor $(bg_pids "$n" supervisor | tr '\n' ' ')"
    done
    seen=
    for f in "$STATE"/bg-*.pid; do
        [ -f "$f" ] || continue
        n=${f##*/bg-}
        n=${n%.*.pid}
        case " $seen " in *" $n "*) continue ;; esac
        seen="$seen $n"
        echo "bg.$n=nohup $(bg_pids "$n" nohup | tr '\n' ' ')"
    done
}

# read_jobs: `job.NAME=systemd STATE LAST` for each timer of this app (STATE: the timer's,
# LAST: when it last started the job), `job.NAME=cron STATE LAST` for each job in its cron
# file (STATE: cron's, LAST: the last start its log records).
read_jobs() {
    for f in /etc/systemd/system/"fabstack-$APP".job-*.timer; do
        [ -f "$f" ] || continue
        n=${f##*/"fabstack-$APP".job-}
        n=${n%.timer}
        echo "job.$n=systemd $(systemctl is-active "fabstack-$APP.job-$n.timer" 2> /dev/null)" \
            "$(systemctl show -p LastTriggerUSec --value "fabstack-$APP.job-$n.timer" 2> /dev/null)"
    done
    if [ -f "/etc/cron.d/fabstack-$APP" ]; then
        cron_state=inactive
        pgrep -x cron > /dev/null && cron_state=active
        sed -n 's/^# job \([a-z0-9-]*\)$/\1/p' "/etc/cron.d/fabstack-$APP" | while read -r n; do
            echo "job.$n=cron $cron_state $(sed -n "s/^job $n: \(.*\): started\$/\1/p" "$LOGS/job-$n.log" 2> /dev/null | tail -n 1)"
        done
    fi
    true
}

# job_remove NAME KIND: the job's timer stopped and its units removed (a run under way
# finishes), or its lines gone from the cron file.
job_remove() {
    case $2 in
        systemd)
            systemctl disable -q --now "fabstack-$APP.job-$1.timer" 2> /dev/null
            rm -f /etc/systemd/system/"fabstack-$APP.job-$1".timer /etc/systemd/system/"fabstack-$APP.job-$1".service
            systemctl daemon-reload
            ;;
        cron) [ -f "/etc/cron.d/fabstack-$APP" ] && sed -i "/^# job $1\$/,+1d" "/etc/cron.d/fabstack-$APP" ;;
    esac
    true
}

# bg_ours PID: a live process of the app user.
bg_ours() {
    live "$1" && [ "$(stat -c %U "/proc/$1" 2>/dev/null)" = "$APP" ]
}

# bg_pids NAME MANAGER: the main pids of NAME's running instances, one per line.
bg_pids() {
    case $2 in
        systemd)
            systemctl list-units --plain --no-legend --state=active "fabstack-$APP.$1@*.service" 2>/dev/null |
                while read -r unit _; do systemctl show -p MainPID --value "$unit"; done | grep -v '^0$'
            ;;
        supervisor)
            supervisorctl status "fabstack-$APP.$1:*" 2>/dev/null | awk '$2 == "RUNNING" { sub(",", "", $4); print $4 }'
            ;;
        nohup)
            for f in "$STATE/bg-$1".*.pid; do
                p=
                read -r p 2>/dev/null < "$f"
                bg_ours "$p" && echo "$p"
            done
            ;;
    esac
    true
}

# bg_start NAME MANAGER COUNT ARGV...: instances 1..COUNT running (those that run are
# kept), any beyond COUNT stopped.
bg_start() {
    name=$1 manager=$2 count=$3
    shift 3
    case $manager in
        systemd)
            for unit in $(systemctl list-units --plain --no-legend --all "fabstack-$APP.$name@*.service" | awk '{print $1}'); do
                i=${unit##*@}
                i=${i%.service}
                [ "$i" -gt "$count" ] 2>/dev/null && systemctl disable -q --now "$unit"
            done
            units=
            for i in $(seq 1 "$count"); do units="$units fabstack-$APP.$name@$i.service"; done
            # shellcheck disable=SC2086 # unit names have no spaces
            systemctl enable -q $units && systemctl start $units
            ;;
        supervisor)
            supervisorctl pid > /dev/null 2>&1 || service supervisor start > /dev/null
            supervisorctl reread > /dev/null && supervisorctl update "fabstack-$APP.$name" > /dev/null
            supervisorctl start "fabstack-$APP.$name:*" > /dev/null
            ;;
        nohup)
            mkdir -p "$STATE"
            for f in "$STATE/bg-$name".*.pid; do
                [ -f "$f" ] || continue
                i=${f%.pid}
                i=${i##*.}
                [ "$i" -gt "$count" ] && bg_stop_pid "$f" 10
            done
            for i in $(seq 1 "$count"); do
                record="$STATE/bg-$name.$i.pid"
                p=
                read -r p 2>/dev/null < "$record"
                bg_ours "$p" && continue
                SPAWN_ENV=$APP_ENV spawn_as_app "$CURRENT" "$LOGS/$name.$i.out" "$@"
                # shellcheck disable=SC2154 # set by spawn_as_app (common.sh)
                echo "$spawned" > "$record.new" && mv -f "$record.new" "$record"
            done
            ;;
    esac
    bg_settle "$name" "$manager" "$count"
}

# bg_settle NAME MANAGER COUNT: wait (up to 10 s) until COUNT instances run, and fail
# naming the process when they do not (a command that exits at once).
bg_settle() {
    for _ in $(seq 1 50); do
        [ "$(bg_pids "$1" "$2" | wc -l)" -ge "$3" ] && sleep 1 && [ "$(bg_pids "$1" "$2" | wc -l)" -ge "$3" ] && return 0
        sleep 0.2
    done
    echo "process $1: $(bg_pids "$1" "$2" | wc -l) of $3 instance(s) running under $2" >&2
    bg_tail "$1" "$2" >&2
    return 1
}

# bg_tail NAME KIND LINES: the last LINES a background process (KIND: its manager) or a
# scheduled job (KIND: timer or cron) wrote.
bg_tail() {
    case $2 in
        systemd) journalctl -q -n "$3" --no-pager -u "fabstack-$APP.$1@*" 2>/dev/null ;;
        supervisor) tail -q -n "$3" /var/log/supervisor/"fabstack-$APP.$1"_*.out 2>/dev/null ;;
        nohup) as_app / tail -q -n "$3" "$LOGS/$1".*.out 2>/dev/null ;;
        timer) journalctl -q -n "$3" --no-pager -u "fabstack-$APP.job-$1.service" 2>/dev/null ;;
        cron) tail -n "$3" "$LOGS/job-$1.log" 2>/dev/null ;;
    esac
    true
}

# bg_stop_pid RECORD TIMEOUT: TERM to the recorded process, KILL its group after TIMEOUT s.
bg_stop_pid() {
    p=
    read -r p 2>/dev/null < "$1"
    if bg_ours "$p"; then
        kill -TERM "$p"
        gone_within "$p" "$2" || kill -KILL -- "-$p"
    fi
    rm -f "$1"
}

# bg_stop NAME MANAGER TIMEOUT: every instance stopped and confirmed gone.
bg_stop() {
    case $2 in
        systemd) systemctl stop "fabstack-$APP.$1@*.service" ;;
        supervisor) supervisorctl stop "fabstack-$APP.$1:*" > /dev/null 2>&1 ;;
        nohup)
            for f in "$STATE/bg-$1".*.pid; do
                [ -f "$f" ] && bg_stop_pid "$f" "$3" &
            done
            wait
            ;;
    esac
    true
}

# bg_restart NAME MANAGER COUNT TIMEOUT ARGV...: all stopped, then all started.
bg_restart() {
    name=$1 manager=$2 count=$3 timeout=$4
    shift 4
    bg_stop "$name" "$manager" "$timeout" && bg_start "$name" "$manager" "$count" "$@"
}

# bg_remove NAME MANAGER: stopped, and its unit or program gone.
bg_remove() {
    bg_stop "$1" "$2" 60
    case $2 in
        systemd)
            systemctl disable -q "fabstack-$APP.$1@*.service" 2>/dev/null
            rm -f /etc/systemd/system/"fabstack-$APP.$1"@.service && systemctl daemon-reload
            ;;
        supervisor)
            rm -f /etc/supervisor/conf.d/"fabstack-$APP.$1".conf
            supervisorctl update > /dev/null 2>&1
            ;;
    esac
    true
}

# bg_programs RELEASE NAME=PROGRAM...: each program exists (a relative one inside RELEASE)
# and is executable; the first that is not is named.
bg_programs() {
    release=$1
    shift
    for spec; do
        program=${spec#*=}
        case $program in /*) path=$program ;; *) path=$release/$program ;; esac
        if [ ! -x "$path" ] && [ ! -f "$path" ]; then
            echo "process ${spec%%=*}: $program is not in the release or its virtualenv; add it to the project's requirements" >&2
            return 1
        fi
    done
}
