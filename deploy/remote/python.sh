# The app's virtualenv.
#
# Set before use: VENV, VENV_MARKER, REQUIREMENTS_MARKER, BUILDS.

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

# new_build: a new directory for one build's archive, under BUILDS (root's, 700, made
# here; refused when something else is there): only root can write in it, so the archive
# root packs is the one the controller downloads, and its sha256 is checked there.
new_build() {
    for dir in "${BUILDS%/*}" "$BUILDS"; do
        if [ -L "$dir" ] || { [ -e "$dir" ] && [ "$(stat -c %u "$dir")" != 0 ]; }; then
            echo "$dir is not root's own directory: fabstack builds nowhere another user can write" >&2
            return 1
        fi
    done
    install -d -o root -g root -m 755 "${BUILDS%/*}" && install -d -o root -g root -m 700 "$BUILDS" &&
        mktemp -d "$BUILDS/build.XXXXXXXX"
}

# packed ARCHIVE: its path and sha256 on one line, for the controller to check its copy.
packed() {
    sum=$(sha256sum "$1") && echo "$1 ${sum%% *}"
}

# pack_venv: the virtualenv, compressed, in a new build directory: for the other hosts of
# this kind (prints its path and sha256). Without the record of the project's
# requirements: a host that gets it installs its project's own on deploy.
pack_venv() {
    build=$(new_build) || return 1
    (umask 077 && tar -C "$VENV" --exclude "./${REQUIREMENTS_MARKER##*/}" -czf "$build/venv.tar.gz" .) &&
        packed "$build/venv.tar.gz"
}

# unpack_venv ARCHIVE MARKER: the virtualenv another host of this kind built, in place of
# this one (unpacked beside it, then swapped in); MARKER records what it holds.
unpack_venv() {
    rm -rf "$VENV.new" "$VENV.old" && mkdir -p "$VENV.new" && tar -C "$VENV.new" -xzf "$1" || return 1
    echo "$2" > "$VENV.new/${VENV_MARKER##*/}" || return 1
    if [ -d "$VENV" ]; then mv "$VENV" "$VENV.old" || return 1; fi
    mv "$VENV.new" "$VENV" && rm -rf "$VENV.old"
}

# build_wheels FILE MARKER [INSTALL_FILE]: the project's requirements (FILE) built as
# wheels (from the package index), installed from them (INSTALL_FILE: FILE with each
# vendored archive named by its name and version, which its wheel satisfies), and the
# wheels packed in a new build directory for the other hosts of this kind (prints its
# path and sha256; pip's output goes to stderr).
build_wheels() {
    build=$(new_build) || return 1
    mkdir "$build/wheels" || return 1
    if ! out=$(pip_cmd wheel --disable-pip-version-check -q -w "$build/wheels" -r "$1" 2>&1); then
        echo "$out" >&2
        build_hint "$out" >&2
        return 1
    fi
    echo "$out" >&2
    pip_install --no-index --find-links "$build/wheels" -r "${3:-$1}" >&2 &&
        (umask 077 && tar -C "$build/wheels" -czf "$build/wheels.tar.gz" .) && rm -rf "$build/wheels" &&
        echo "$2" > "$REQUIREMENTS_MARKER" && packed "$build/wheels.tar.gz"
}

# build_hint OUTPUT: the last line a failed build says, when its output shows what the
# host lacks: the Debian package that brings it, for the system_packages setting.
build_hint() {
    case $1 in
        *"pg_config"*) need="libpq-dev build-essential" what="PostgreSQL's pg_config and a C compiler" ;;
        *"Python.h: No such file"*) need="python3-dev" what="Python's headers" ;;
        *"jpeglib.h"* | *"for jpeg"*) need="libjpeg-dev zlib1g-dev" what="libjpeg's headers" ;;
        *"zlib.h"*) need="zlib1g-dev" what="zlib's headers" ;;
        *"mysql_config"* | *"pkg-config"*"mysqlclient"*) need="default-libmysqlclient-dev pkg-config" what="MySQL's client headers" ;;
        *"libxml/"* | *"libxslt"*) need="libxml2-dev libxslt1-dev" what="libxml2's headers" ;;
        *"C compiler"* | *"gcc'"* | *"command 'cc' failed"* | *"gcc: not found"*)
            need="build-essential python3-dev" what="a C compiler" ;;
        *) return 0 ;;
    esac
    echo "a requirement builds from source and needs $what: add $need to system_packages"
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
