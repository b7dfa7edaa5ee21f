# The app's virtualenv.
#
# Set before use: VENV, VENV_MARKER, REQUIREMENTS_MARKER.

# pip_install ARG...: pip install into the virtualenv, run from the distribution's pip
# wheel (the venv is made --without-pip, which saves ensurepip's ~4 s of CPU per host);
# the venv's own pip, installed on first use, where the wheel is missing.
pip_install() {
    wheel=
    for w in /usr/share/python-wheels/pip-*.whl; do [ -e "$w" ] && wheel=$w; done
    if [ -n "$wheel" ]; then
        "$VENV/bin/python" "$wheel/pip" install --disable-pip-version-check -q "$@"
    else
        [ -x "$VENV/bin/pip" ] || "$VENV/bin/python" -m ensurepip -q || return
        "$VENV/bin/pip" install --disable-pip-version-check -q "$@"
    fi
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

# project_requirements FILE MARKER: the project's requirements.txt, installed.
project_requirements() {
    pip_install -r "$1" && echo "$2" > "$REQUIREMENTS_MARKER"
}
