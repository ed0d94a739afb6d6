"""Run-time compilation of CUDA C++ with NVRTC, and kernel launches through the CUDA driver API.

Both libraries are reached with ``ctypes``: NVRTC ships in PyTorch's CUDA wheels (``nvidia/cu13``
or ``nvidia/cuda_nvrtc``) and the driver (``libcuda``) comes with the NVIDIA driver, so users need
no CUDA toolkit, no compiler and no build step. Compiled code is cached in memory per CUDA context
and on disk (``$XDG_CACHE_HOME/maskrcnn_ops``, keyed by a hash of source, options, NVRTC version
and target architecture).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import sys
import sysconfig
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

_NVRTC_SUCCESS = 0
_CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8


class NvrtcError(RuntimeError):
    """NVRTC or the driver could not compile or load a kernel (the message holds the log)."""


class NvrtcUnavailable(NvrtcError):
    """The NVRTC or CUDA driver library cannot be found on this machine."""


def _site_dirs() -> list[Path]:
    dirs = [Path(sysconfig.get_paths()["purelib"]), Path(sysconfig.get_paths()["platlib"])]
    dirs += [Path(p) for p in sys.path if p.endswith("site-packages")]
    seen: list[Path] = []
    for d in dirs:
        if d not in seen and d.is_dir():
            seen.append(d)
    return seen


def _cuda_home_dirs() -> list[Path]:
    homes = [os.environ.get(v) for v in ("CUDA_HOME", "CUDA_PATH")] + ["/usr/local/cuda"]
    return [Path(h) for h in homes if h and Path(h).is_dir()]


def _nvrtc_candidates() -> list[str]:
    """Places to look for NVRTC: the PyPI wheels first (what torch itself uses), then the system."""
    found = []
    for site in _site_dirs():
        for sub in ("nvidia/cu13/lib", "nvidia/cuda_nvrtc/lib", "nvidia/cu13/bin", "nvidia/cuda_nvrtc/bin"):
            d = site / sub
            if d.is_dir():
                found += sorted(
                    str(p)
                    for p in d.iterdir()
                    if p.name.startswith(("libnvrtc.so", "nvrtc64_")) and "builtins" not in p.name
                )
    for home in _cuda_home_dirs():
        for sub in ("lib64", "lib", "bin"):
            d = home / sub
            if d.is_dir():
                found += sorted(
                    str(p)
                    for p in d.iterdir()
                    if p.name.startswith(("libnvrtc.so", "nvrtc64_")) and "builtins" not in p.name
                )
    found += ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"]
    return found


def include_dirs() -> list[str]:
    """Directories holding ``cuda_fp16.h`` / ``cuda_bf16.h`` (NVRTC does not find them alone)."""
    dirs = []
    for site in _site_dirs():
        for sub in ("nvidia/cu13/include", "nvidia/cuda_runtime/include", "nvidia/cuda_nvrtc/include"):
            d = site / sub
            if (d / "cuda_fp16.h").is_file():
                dirs.append(str(d))
    for home in _cuda_home_dirs():
        if (home / "include" / "cuda_fp16.h").is_file():
            dirs.append(str(home / "include"))
    return dirs


_lock = threading.Lock()
_nvrtc_lib: ctypes.CDLL | None = None


def nvrtc() -> ctypes.CDLL:
    """The NVRTC library (loaded once)."""
    global _nvrtc_lib
    with _lock:
        if _nvrtc_lib is None:
            errors = []
            for name in _nvrtc_candidates():
                try:
                    lib = ctypes.CDLL(name)
                    lib.nvrtcGetErrorString.restype = ctypes.c_char_p
                    _nvrtc_lib = lib
                    break
                except OSError as e:
                    errors.append(f"{name}: {e}")
            else:
                raise NvrtcUnavailable("NVRTC not found; looked for:\n" + "\n".join(errors))
        return _nvrtc_lib


def nvrtc_version() -> tuple[int, int]:
    major, minor = ctypes.c_int(), ctypes.c_int()
    nvrtc().nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    return major.value, minor.value


def supported_archs() -> list[int]:
    """SM versions this NVRTC can target, e.g. [75, 80, 86, 89, 90, ...]."""
    lib = nvrtc()
    n = ctypes.c_int()
    if lib.nvrtcGetNumSupportedArchs(ctypes.byref(n)) != _NVRTC_SUCCESS:
        return []
    archs = (ctypes.c_int * n.value)()
    lib.nvrtcGetSupportedArchs(archs)
    return list(archs)


def compile_source(source: str, name: str, arch: str, options: Sequence[str] = ()) -> bytes:
    """Compile CUDA C++ to PTX (``arch="compute_XY"``) or a cubin (``arch="sm_XY"``).

    Needs no GPU. Raises ``NvrtcError`` with the compiler log on failure.
    """
    lib = nvrtc()
    prog = ctypes.c_void_p()

    def check(code: int, what: str) -> None:
        if code != _NVRTC_SUCCESS:
            raise NvrtcError(f"{what}: {lib.nvrtcGetErrorString(code).decode()}")

    check(
        lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(), 0, None, None), "nvrtcCreateProgram"
    )
    try:
        opts = [f"--gpu-architecture={arch}", "--std=c++17"]
        opts += [f"--include-path={d}" for d in include_dirs()]
        opts += list(options)
        argv = (ctypes.c_char_p * len(opts))(*[o.encode() for o in opts])
        code = lib.nvrtcCompileProgram(prog, len(opts), argv)
        if code != _NVRTC_SUCCESS:
            size = ctypes.c_size_t()
            lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
            log = ctypes.create_string_buffer(size.value)
            lib.nvrtcGetProgramLog(prog, log)
            raise NvrtcError(
                f"compiling {name} for {arch} failed ({lib.nvrtcGetErrorString(code).decode()}):\n"
                f"{log.value.decode(errors='replace')}"
            )
        cubin = arch.startswith("sm_")
        size = ctypes.c_size_t()
        get_size = lib.nvrtcGetCUBINSize if cubin else lib.nvrtcGetPTXSize
        get = lib.nvrtcGetCUBIN if cubin else lib.nvrtcGetPTX
        check(get_size(prog, ctypes.byref(size)), "nvrtcGet(PTX|CUBIN)Size")
        buf = ctypes.create_string_buffer(size.value)
        check(get(prog, buf), "nvrtcGet(PTX|CUBIN)")
        return buf.raw
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "maskrcnn_ops"


def compile_cached(source: str, name: str, arch: str, options: Sequence[str] = ()) -> bytes:
    """``compile_source`` with an on-disk cache; an unwritable cache directory is not an error."""
    key = hashlib.sha256("\0".join([source, name, arch, *options, repr(nvrtc_version())]).encode()).hexdigest()[:24]
    path = cache_dir() / f"{Path(name).stem}-{arch}-{key}.{'cubin' if arch.startswith('sm_') else 'ptx'}"
    try:
        return path.read_bytes()
    except OSError:
        pass
    image = compile_source(source, name, arch, options)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as tmp:
            tmp.write(image)
        os.replace(tmp.name, path)  # atomic: concurrent processes never read half a file
    except OSError:
        pass
    return image


# --- driver API --------------------------------------------------------------------------------

_driver_lib: ctypes.CDLL | None = None


def driver() -> ctypes.CDLL:
    global _driver_lib
    with _lock:
        if _driver_lib is None:
            try:
                lib = ctypes.CDLL("nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1")
            except OSError as e:
                raise NvrtcUnavailable(f"CUDA driver library not found: {e}") from e
            for fn in (
                "cuModuleLoadData",
                "cuModuleGetFunction",
                "cuLaunchKernel",
                "cuCtxGetCurrent",
                "cuCtxSetCurrent",
                "cuDevicePrimaryCtxRetain",
                "cuDeviceGet",
                "cuInit",
                "cuFuncSetAttribute",
            ):
                getattr(lib, fn).restype = ctypes.c_int
            _check(lib, lib.cuInit(0), "cuInit")
            _driver_lib = lib
        return _driver_lib


def _check(lib: ctypes.CDLL, code: int, what: str) -> None:
    if code != 0:
        msg = ctypes.c_char_p()
        lib.cuGetErrorString(code, ctypes.byref(msg))
        raise NvrtcError(f"{what} failed: CUDA error {code} ({(msg.value or b'?').decode()})")


_primary: dict[int, int] = {}


def make_current(device_index: int) -> int:
    """Make the primary context of ``device_index`` (the one PyTorch uses) current on this thread;
    returns its handle."""
    lib = driver()
    primary = _primary.get(device_index)
    if primary is None:
        dev = ctypes.c_int()
        _check(lib, lib.cuDeviceGet(ctypes.byref(dev), device_index), "cuDeviceGet")
        handle = ctypes.c_void_p()
        _check(lib, lib.cuDevicePrimaryCtxRetain(ctypes.byref(handle), dev), "cuDevicePrimaryCtxRetain")
        primary = _primary.setdefault(device_index, handle.value or 0)
    current = ctypes.c_void_p()
    _check(lib, lib.cuCtxGetCurrent(ctypes.byref(current)), "cuCtxGetCurrent")
    if (current.value or 0) != primary:
        _check(lib, lib.cuCtxSetCurrent(ctypes.c_void_p(primary)), "cuCtxSetCurrent")
    return primary


class Module:
    """A loaded module; ``function(name)`` gives a launchable kernel."""

    def __init__(self, image: bytes) -> None:
        lib = driver()
        self._module = ctypes.c_void_p()
        self._image = ctypes.create_string_buffer(image)  # must be NUL-terminated for PTX
        _check(lib, lib.cuModuleLoadData(ctypes.byref(self._module), self._image), "cuModuleLoadData")
        self._functions: dict[str, Kernel] = {}

    def function(self, name: str) -> Kernel:
        if name not in self._functions:
            lib = driver()
            fn = ctypes.c_void_p()
            _check(
                lib,
                lib.cuModuleGetFunction(ctypes.byref(fn), self._module, name.encode()),
                f"cuModuleGetFunction({name})",
            )
            self._functions[name] = Kernel(fn)
        return self._functions[name]


class Kernel:
    def __init__(self, handle: ctypes.c_void_p) -> None:
        self.handle = handle

    def __call__(
        self,
        grid: tuple[int, int, int],
        block: tuple[int, int, int],
        args: Sequence[object],
        stream: int,
        shared_bytes: int = 0,
    ) -> None:
        """Launch asynchronously on ``stream`` (a ``cudaStream_t`` as int).

        ``args`` are ctypes values (``c_int``, ``c_void_p``, structures) in kernel-parameter order.
        """
        lib = driver()
        params = (ctypes.c_void_p * len(args))(*[ctypes.cast(ctypes.pointer(a), ctypes.c_void_p) for a in args])
        _check(
            lib,
            lib.cuLaunchKernel(self.handle, *grid, *block, shared_bytes, ctypes.c_void_p(stream), params, None),
            "cuLaunchKernel",
        )


_modules: dict[tuple[int, str], Module] = {}


def load(source: str, name: str, device_index: int, capability: tuple[int, int]) -> Module:
    """Compile (or fetch from cache) ``source`` for a device and load it into its context.

    Targets the device's own SM as a cubin when this NVRTC knows it; otherwise PTX for the newest
    architecture it knows below the device, which the driver compiles on load.
    """
    ctx = make_current(device_index)
    sm = capability[0] * 10 + capability[1]
    archs = supported_archs()
    if sm in archs:
        arch = f"sm_{sm}"
    else:
        older = [a for a in archs if a <= sm]
        if not older:
            raise NvrtcError(f"NVRTC {nvrtc_version()} cannot target sm_{sm} (knows {archs})")
        arch = f"compute_{max(older)}"
    key = (ctx, hashlib.sha256((source + arch).encode()).hexdigest())
    with _lock:
        module = _modules.get(key)
    if module is None:
        module = Module(compile_cached(source, name, arch))
        with _lock:
            module = _modules.setdefault(key, module)
    return module
