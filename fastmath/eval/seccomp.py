"""The sandbox's seccomp filter: an allow-list of the system calls CPython needs to run a math program.

A denylist missed doors (SysV shared memory held host memory past RLIMIT_AS, vsock and netlink sockets
opened), so everything not listed here is refused. A refused call fails with errno
`REFUSED_ERRNO_BASE + its number` (an "unknown error" no real call returns), which the runner turns
into a message naming the call: a newer C library that needs a call missing here shows up as
"system call X refused", not as a mystery. clone3 and the x32 ABI get ENOSYS instead, so that libc
falls back to the call that is refused by name; another architecture's ABI kills the process.
"""

from __future__ import annotations

import errno
import struct

# AUDIT_ARCH_* of each supported machine, and its column in the tables below.
ARCHES = {"x86_64": (0xC000003E, 0), "aarch64": (0xC00000B7, 1)}

# (x86_64, aarch64) numbers, from the kernel's unistd headers; None where the machine lacks the call.
ALLOWED: dict[str, tuple[int | None, int | None]] = {
    # files, read-only in practice (the sandbox's file system is read-only)
    **{"read": (0, 63), "write": (1, 64), "readv": (19, 65), "writev": (20, 66), "pread64": (17, 67)},
    **{"close": (3, 57), "lseek": (8, 62), "fstat": (5, 80), "newfstatat": (262, 79), "statx": (332, 291)},
    **{"stat": (4, None), "lstat": (6, None), "openat": (257, 56), "open": (2, None), "access": (21, None)},
    **{"faccessat": (269, 48), "faccessat2": (439, 439), "readlink": (89, None), "readlinkat": (267, 78)},
    **{"getdents64": (217, 61), "getcwd": (79, 17), "fcntl": (72, 25), "dup": (32, 23), "dup2": (33, None)},
    **{"dup3": (292, 24), "chdir": (80, 49), "fchdir": (81, 50)},
    "ioctl": (16, 29),  # terminal queries only (IOCTLS)
    # memory, bounded by RLIMIT_AS
    **{"mmap": (9, 222), "munmap": (11, 215), "mprotect": (10, 226), "mremap": (25, 216), "brk": (12, 214)},
    "madvise": (28, 233),
    # signals, time, identity, limits, the process's own end
    **{"rt_sigaction": (13, 134), "rt_sigprocmask": (14, 135), "rt_sigreturn": (15, 139)},
    **{"sigaltstack": (131, 132), "kill": (62, 129), "tgkill": (234, 131), "tkill": (200, 130)},
    **{"getpid": (39, 172), "gettid": (186, 178), "getppid": (110, 173), "getuid": (102, 174)},
    **{"geteuid": (107, 175), "getgid": (104, 176), "getegid": (108, 177), "getrandom": (318, 278)},
    **{"clock_gettime": (228, 113), "clock_getres": (229, 114), "gettimeofday": (96, 169)},
    **{"nanosleep": (35, 101), "clock_nanosleep": (230, 115), "sched_yield": (24, 124)},
    **{"sched_getaffinity": (204, 123), "futex": (202, 98), "set_robust_list": (273, 99)},
    **{"set_tid_address": (218, 96), "rseq": (334, 293), "arch_prctl": (158, None), "prlimit64": (302, 261)},
    **{"getrusage": (98, 165), "sysinfo": (99, 179), "uname": (63, 160), "restart_syscall": (219, 128)},
    **{"exit": (60, 93), "exit_group": (231, 94), "wait4": (61, 260)},
    "execve": (59, 221),  # bubblewrap starts the interpreter after loading the filter
}
# TCGETS, TIOCGWINSZ, FIONBIO, FIONCLEX, FIOCLEX: what isatty() and file objects ask; the same on both.
IOCTLS = (0x5401, 0x5413, 0x5421, 0x5450, 0x5451)

# Refused calls named in messages (any other refused call is named by its number).
NAMED_REFUSALS: dict[str, tuple[int | None, int | None]] = {
    **{"clone": (56, 220), "clone3": (435, 435), "fork": (57, None), "vfork": (58, None)},
    **{"ptrace": (101, 117), "process_vm_readv": (310, 270), "process_vm_writev": (311, 271)},
    **{"pidfd_open": (434, 434), "pidfd_getfd": (438, 438), "pidfd_send_signal": (424, 424), "kcmp": (312, 272)},
    **{"unshare": (272, 97), "setns": (308, 268), "mount": (165, 40), "bpf": (321, 280)},
    **{"userfaultfd": (323, 282), "perf_event_open": (298, 241), "io_uring_setup": (425, 425)},
    **{"keyctl": (250, 219), "add_key": (248, 217), "memfd_create": (319, 279), "prctl": (157, 167)},
    **{"socket": (41, 198), "socketpair": (53, 199), "connect": (42, 203), "bind": (49, 200)},
    **{"shmget": (29, 194), "shmat": (30, 196), "shmctl": (31, 195), "semget": (64, 190)},
    **{"msgget": (68, 186), "mq_open": (240, 180), "pipe2": (293, 59), "pipe": (22, None)},
    **{"unlink": (87, None), "unlinkat": (263, 35), "rename": (82, None), "renameat2": (316, 276)},
    **{"mkdir": (83, None), "mkdirat": (258, 34), "rmdir": (84, None), "mknod": (133, None)},
    **{"mknodat": (259, 33), "symlink": (88, None), "symlinkat": (266, 36), "link": (86, None)},
    **{"linkat": (265, 37), "chmod": (90, None), "fchmodat": (268, 53), "truncate": (76, 45)},
    **{"ftruncate": (77, 46), "fallocate": (285, 47), "setsid": (112, 157), "setpgid": (109, 154)},
    **{"setpriority": (141, 140), "sched_setaffinity": (203, 122), "rt_sigqueueinfo": (129, 138)},
    **{"poll": (7, None), "ppoll": (271, 73), "close_range": (436, 436), "futex_waitv": (449, 449)},
    **{"fchmodat2": (452, 452), "map_shadow_stack": (453, 453), "mseal": (462, 462)},
}

REFUSED_ERRNO_BASE = 3000
CALL_LIMIT = 1024  # above every call number; keeps REFUSED_ERRNO_BASE + number below 4096
_CLONE3 = 435
_X32_SYSCALL_BIT = 0x40000000
_LOAD, _JEQ, _JGE, _ADD, _RET, _RET_A = 0x20, 0x15, 0x35, 0x04, 0x06, 0x16  # classic BPF opcodes
_ALLOW, _KILL_PROCESS, _ERRNO = 0x7FFF0000, 0x80000000, 0x00050000
_NR, _ARCH, _ARG1 = 0, 4, 24  # offsets in struct seccomp_data (the low word of args[1], little-endian)


def call_numbers(table: dict[str, tuple[int | None, int | None]], machine: str) -> dict[str, int]:
    """Each call's number on `machine`, leaving out those it lacks."""
    column = ARCHES[machine][1]
    return {name: number for name, row in table.items() if (number := row[column]) is not None}


def refusal_names(machine: str) -> dict[int, str]:
    """errno -> call name, for the refused calls a message can name."""
    return {REFUSED_ERRNO_BASE + nr: name for name, nr in call_numbers(NAMED_REFUSALS, machine).items()}


def build(machine: str) -> bytes:
    """The filter as classic BPF, the format bubblewrap's --seccomp loads."""
    arch = ARCHES[machine][0]
    refuse = [_insn(_ADD, _ERRNO | REFUSED_ERRNO_BASE), _insn(_RET_A, 0)]  # errno = base + the call's number
    enosys = _insn(_RET, _ERRNO | errno.ENOSYS)
    program = [_insn(_LOAD, _ARCH), _insn(_JEQ, arch, 1, 0), _insn(_RET, _KILL_PROCESS), _insn(_LOAD, _NR)]
    if machine == "x86_64":  # the x32 ABI's numbers would bypass the list
        program += [_insn(_JGE, _X32_SYSCALL_BIT, 0, 1), enosys]
    program += [_insn(_JGE, CALL_LIMIT, 0, 1), enosys, _insn(_JEQ, _CLONE3, 0, 1), enosys]
    allowed = call_numbers(ALLOWED, machine)
    ioctl_check = [_insn(_LOAD, _ARG1)]
    for request in IOCTLS:
        ioctl_check += [_insn(_JEQ, request, 0, 1), _insn(_RET, _ALLOW)]
    ioctl_check += [_insn(_LOAD, _NR), *refuse]
    program += [_insn(_JEQ, allowed.pop("ioctl"), 0, len(ioctl_check)), *ioctl_check]
    for nr in allowed.values():
        program += [_insn(_JEQ, nr, 0, 1), _insn(_RET, _ALLOW)]
    return b"".join([*program, *refuse])


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)
