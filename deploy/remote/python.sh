# The app's virtualenv.
#
# Set before use: VENV, VENV_MARKER, REQUIREMENTS_MARKER.

# pip_cmd ARG...: pip in the virtualenv, run from the distribution's pip wheel (the venv
# is made --without-pip, which saves ensurepip's ~4 s of CPU per host); the venv's own
# pip, installed on first use, where the wheel is missing.
pip_cmd() {
    wheel=
    for w in /usr/share/python-wheels/pip-*.whl; do [ -e "$w" ] && wheel=$w; done
    if [ -n "$wheel" ]; then
        "$VENV/bin/python" "$wheel/pip" "$@"
    else
        [ -x "$VENV/bin/pip" ] || "$VENV/bin/python" -m ensurepip -q || return
        "$VENV/bin/pip" "$@"
    fi
}

# pip_install ARG...: pip install into the virtualenv.
pip_install() {
    pip_cmd install --disable-pip-version-check -q "$@"
}

# make_venv FRESH MARKER REQUIREMENT...: the virtualenv with the requirements (made anew
# when FRESH is yes: a new Python), compiled once by root (the app cannot write .pyc
# files into it); MARKER records what it holds.
make_venv() {
    if [ "$1" = yes ]; then rm -rf "$VENV"; fi
    marker=$2
    shift 2
    python3 -m venv --without-pip "$VENV" &&
        pip_install --no-compile "$@" &&
        "$VENV/bin/python" -m compileall -q -j 0 "$VENV/lib" > /dev/null &&
        echo "$marker" > "$VENV_MARKER"
}

# pack_venv OUT: the virtualenv, compressed, at OUT (root's, 600): for the other hosts of
# this kind. Without the record of the project's requirements: a host that gets it
# installs its project's own on deploy.
pack_venv() {
    (umask 077 && tar -C "$VENV" --exclude "./${REQUIREMENTS_MARKER##*/}" -czf "$1" .)
}

# unpack_venv ARCHIVE MARKER: the virtualenv another host of this kind built, in place of
# this one (unpacked beside it, then swapped in); MARKER records what it holds.
unpack_venv() {
    rm -rf "$VENV.new" "$VENV.old" && mkdir -p "$VENV.new" && tar -C "$VENV.new" -xzf "$1" || return 1
    echo "$2" > "$VENV.new/${VENV_MARKER##*/}" || return 1
    if [ -d "$VENV" ]; then mv "$VENV" "$VENV.old" || return 1; fi
    mv "$VENV.new" "$VENV" && rm -rf "$VENV.old"
}

# build_wheels FILE MARKER OUT: the project's requirements.txt built as wheels (from the
# package index), installed from them, and the wheels packed at OUT (root's, 600) for
# the other hosts of this kind.
build_wheels() {
    wheels=$(mktemp -d) || return 1
    pip_cmd wheel --disable-pip-version-check -q -w "$wheels" -r "$1" &&
        pip_install --no-index --find-links "$wheels" -r "$1" &&
        (umask 077 && tar -C "$wheels" -czf "$3" .) && echo "$2" > "$REQUIREMENTS_MARKER"
    built=$?
    rm -rf "$wheels"
    return $built
}

# install_wheels FILE ARCHIVE MARKER: the project's requirements.txt installed from the
# wheels another host of this kind built (no package index needed).
install_wheels() {
    wheels=$(mktemp -d) || return 1
    tar -C "$wheels" -xzf "$2" && pip_install --no-index --find-links "$wheels" -r "$1" &&
        echo "$3" > "$REQUIREMENTS_MARKER"
    installed=$?
    rm -rf "$wheels"
    return $installed
}
