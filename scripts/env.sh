# Sourced by the scripts in this folder: installs the system packages Kestrel's GPU paths need
# when they are missing (Debian/Ubuntu), and prepares the environment Mesa expects.

# gcc, g++, binutils (nm) and valgrind build and check the C ABI's tests (scripts/test-capi.sh);
# openjdk-17-jdk-headless runs the Android JNI layer's host test (scripts/test-android.sh).
# The libav*-dev packages, libclang-dev (bindgen) and pkg-config build the `video` feature
# (ffmpeg-next, on by default in the CLI); the ffmpeg tool makes the synthetic test videos.
kestrel_packages=(mesa-vulkan-drivers libvulkan1 libegl1 libegl-mesa0 libgl1-mesa-dri gcc g++ binutils valgrind openjdk-17-jdk-headless
    libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libswresample-dev libavfilter-dev libavdevice-dev libclang-dev pkg-config ffmpeg)

kestrel_install_deps() {
    local missing=()
    for p in "${kestrel_packages[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "kestrel: installing ${missing[*]}" >&2
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# Mesa's GL/EGL drivers want a private runtime directory.
kestrel_runtime_dir() {
    if [ -z "${XDG_RUNTIME_DIR:-}" ] || [ ! -d "${XDG_RUNTIME_DIR}" ]; then
        XDG_RUNTIME_DIR="$(mktemp -d)"
        chmod 700 "$XDG_RUNTIME_DIR"
        export XDG_RUNTIME_DIR
    fi
}

# The lavapipe (CPU Vulkan) driver manifest, for forcing it in tests.
kestrel_lavapipe_icd() {
    echo "/usr/share/vulkan/icd.d/lvp_icd.$(uname -m).json"
}
