//! Hardening after start-up (the slirp4netns drop-in's `--enable-sandbox` and
//! `--enable-seccomp`): once the TAP is open and the API socket bound, slipway needs no more of
//! the file system and few system calls, so it gives them up.
//!
//! # Theory of operation
//!
//! [`enter`] runs while the process is still single-threaded (mount namespaces are per thread
//! until then; every thread started later inherits the result):
//! 1. `unshare(CLONE_NEWNS)`; without root, `CLONE_NEWUSER` too, mapping only our own uid and
//!    gid, which is what gives an unprivileged process the right to mount;
//! 2. every mount becomes private, so nothing propagates back to the host;
//! 3. a small tmpfs on `/tmp` becomes the new root, holding read-only bind mounts of `/etc`
//!    (resolv.conf, hosts) and `/run` (where resolv.conf often points); `pivot_root` into it and
//!    detach the old root;
//! 4. every capability but `CAP_NET_BIND_SERVICE` leaves the bounding, effective, permitted and
//!    inheritable sets, and `no_new_privs` is set.
//!
//! [`install_seccomp`] loads a classic-BPF filter that answers `EPERM` to system calls a running
//! slipway never makes (mounting, namespaces, tracing other processes, loading kernel code, exec,
//! clock and keyring changes, …) and allows the rest. It is a deny-list on purpose: an allow-list
//! that missed a call the runtime makes on some kernel would kill the network, while these are
//! the calls an attacker who took over the process would want. Architectures other than x86_64
//! and aarch64 are refused with an error; on x86_64 the x32 ABI is refused entirely.
//!
//! Limits: after [`enter`], files outside /etc and /run cannot be opened (unix-socket forwards
//! to new paths, pcap files) and the API socket file is not removed at exit.

use anyhow::{bail, Context, Result};
use std::ffi::CString;
use std::io;

fn check(rc: libc::c_int, what: &str) -> Result<()> {
    if rc != 0 {
        return Err(io::Error::last_os_error()).with_context(|| what.to_string());
    }
    Ok(())
}

fn cstr(s: &str) -> CString {
    CString::new(s).expect("no NUL in a constant path")
}

fn mount(
    src: Option<&str>,
    target: &str,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<()> {
    let (src, target, fstype, data) = (
        src.map(cstr),
        cstr(target),
        fstype.map(cstr),
        data.map(cstr),
    );
    let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is a NUL-terminated string that outlives the call, or null.
    let rc = unsafe {
        libc::mount(
            ptr(&src),
            target.as_ptr(),
            ptr(&fstype),
            flags,
            ptr(&data) as *const libc::c_void,
        )
    };
    check(rc, &format!("mounting {}", target.to_string_lossy()))
}

/// Live in a new mount namespace that holds only /etc and /run, without capabilities. Call it
/// while the process has a single thread.
pub fn enter() -> Result<()> {
    // SAFETY: plain identity queries.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if uid == 0 {
        // SAFETY: unshare affects only this (single-threaded) process.
        check(
            unsafe { libc::unshare(libc::CLONE_NEWNS) },
            "creating a mount namespace",
        )?;
    } else {
        // SAFETY: as above.
        check(
            unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) },
            "creating a user and mount namespace (is kernel.unprivileged_userns_clone off?)",
        )?;
        std::fs::write("/proc/self/setgroups", "deny").context("writing /proc/self/setgroups")?;
        std::fs::write("/proc/self/uid_map", format!("{uid} {uid} 1"))
            .context("writing uid_map")?;
        std::fs::write("/proc/self/gid_map", format!("{gid} {gid} 1"))
            .context("writing gid_map")?;
    }
    mount(None, "/", None, libc::MS_REC | libc::MS_PRIVATE, None)?;
    mount(
        Some("tmpfs"),
        "/tmp",
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        Some("size=1m,mode=0755"),
    )?;
    for dir in ["/tmp/etc", "/tmp/run", "/tmp/old"] {
        std::fs::create_dir(dir).with_context(|| format!("creating {dir}"))?;
    }
    let ro_bind = |from: &str, to: &str| -> Result<()> {
        mount(Some(from), to, None, libc::MS_BIND | libc::MS_REC, None)?;
        // Read-only needs a second, remounting call; locked flags (nosuid, …) are kept.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        let c = cstr(to);
        // SAFETY: statvfs writes into st.
        check(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, "statvfs")?;
        let locked = st.f_flag & (libc::ST_NOSUID | libc::ST_NODEV | libc::ST_NOEXEC);
        let mut flags = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY;
        if locked & libc::ST_NOSUID != 0 {
            flags |= libc::MS_NOSUID;
        }
        if locked & libc::ST_NODEV != 0 {
            flags |= libc::MS_NODEV;
        }
        if locked & libc::ST_NOEXEC != 0 {
            flags |= libc::MS_NOEXEC;
        }
        mount(None, to, None, flags, None)
    };
    ro_bind("/etc", "/tmp/etc")?;
    if std::path::Path::new("/run").is_dir() {
        ro_bind("/run", "/tmp/run")?;
    }
    let (new_root, old) = (cstr("/tmp"), cstr("/tmp/old"));
    // SAFETY: two valid paths; pivot_root has no libc wrapper.
    let rc = unsafe { libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), old.as_ptr()) };
    check(rc as libc::c_int, "pivot_root")?;
    std::env::set_current_dir("/").context("chdir /")?;
    let old = cstr("/old");
    // SAFETY: a valid path.
    check(
        unsafe { libc::umount2(old.as_ptr(), libc::MNT_DETACH) },
        "detaching the old root",
    )?;
    let _ = std::fs::remove_dir("/old");
    drop_capabilities()
}

const CAP_NET_BIND_SERVICE: u32 = 10;
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn drop_capabilities() -> Result<()> {
    // The bounding set first (needs CAP_SETPCAP, which we still have); unknown caps end it.
    for cap in 0..64u32 {
        if cap == CAP_NET_BIND_SERVICE {
            continue;
        }
        // SAFETY: prctl with integer arguments.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINVAL) {
                break;
            }
            return Err(e).context("dropping capabilities from the bounding set");
        }
    }
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget fills two CapData for version 3.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    check(rc as libc::c_int, "reading capabilities")?;
    let keep = 1u32 << CAP_NET_BIND_SERVICE;
    let new = [
        CapData {
            effective: data[0].effective & keep,
            permitted: data[0].permitted & keep,
            inheritable: 0,
        },
        CapData::default(),
    ];
    // SAFETY: capset reads two CapData for version 3.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header, new.as_ptr()) };
    check(rc as libc::c_int, "dropping capabilities")?;
    // SAFETY: prctl with integer arguments.
    check(
        unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) },
        "setting no_new_privs",
    )
}

/// System calls a running slipway never makes, refused with EPERM by [`install_seccomp`].
pub fn denied_syscalls() -> Vec<libc::c_long> {
    let mut v = vec![
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_chroot,
        libc::SYS_unshare,
        libc::SYS_setns,
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_reboot,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_acct,
        libc::SYS_settimeofday,
        libc::SYS_clock_settime,
        libc::SYS_clock_adjtime,
        libc::SYS_adjtimex,
        libc::SYS_open_by_handle_at,
        libc::SYS_name_to_handle_at,
        libc::SYS_userfaultfd,
        libc::SYS_quotactl,
        libc::SYS_syslog,
        libc::SYS_execve,
        libc::SYS_execveat,
        libc::SYS_fsopen,
        libc::SYS_fsmount,
        libc::SYS_fsconfig,
        libc::SYS_fspick,
        libc::SYS_move_mount,
        libc::SYS_open_tree,
        libc::SYS_pidfd_getfd,
        libc::SYS_vhangup,
        libc::SYS_sethostname,
        libc::SYS_setdomainname,
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([libc::SYS_iopl, libc::SYS_ioperm]);
    v
}

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

/// BPF_LD | BPF_W | BPF_ABS (0x00 | 0x00 | 0x20).
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x05 | 0x10;
const BPF_JGE_K: u16 = 0x05 | 0x30;
const BPF_RET_K: u16 = 0x06;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The filter program: wrong architecture or x32 → EPERM; a denied call → EPERM; else allow.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub fn filter() -> Vec<libc::sock_filter> {
    let eperm = SECCOMP_RET_ERRNO | libc::EPERM as u32;
    // struct seccomp_data: int nr; __u32 arch; …
    let mut p = vec![
        stmt(BPF_LD_W_ABS, 4),
        jump(BPF_JEQ_K, AUDIT_ARCH, 1, 0),
        stmt(BPF_RET_K, eperm),
        stmt(BPF_LD_W_ABS, 0),
        jump(BPF_JGE_K, X32_SYSCALL_BIT, 0, 1),
        stmt(BPF_RET_K, eperm),
    ];
    for nr in denied_syscalls() {
        p.push(jump(BPF_JEQ_K, nr as u32, 0, 1));
        p.push(stmt(BPF_RET_K, eperm));
    }
    p.push(stmt(BPF_RET_K, SECCOMP_RET_ALLOW));
    p
}

/// Load the filter for this process and every thread it starts later.
pub fn install_seccomp() -> Result<()> {
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    bail!("slipway's seccomp filter is written for x86_64 and aarch64 only; leave --enable-seccomp off here");
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    match load(&filter()) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            bail!("this kernel has no seccomp filters (CONFIG_SECCOMP_FILTER); leave --enable-seccomp off")
        }
        Err(e) => Err(e).context("loading the seccomp filter"),
    }
}

/// `no_new_privs`, then the filter. Allocates nothing (safe in a forked child).
fn load(program: &[libc::sock_filter]) -> io::Result<()> {
    let prog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: prog points at `program`, alive for the call; the kernel copies it.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            &prog as *const libc::sock_fprog as libc::c_ulong,
            0,
            0,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_denies_each_listed_call_and_ends_by_allowing() {
        let f = filter();
        let denied = denied_syscalls();
        assert_eq!(f.len(), 6 + 2 * denied.len() + 1);
        assert!(f.len() < 4096, "BPF_MAXINSNS");
        assert_eq!(f.last().unwrap().k, SECCOMP_RET_ALLOW);
        for (i, nr) in denied.iter().enumerate() {
            let j = &f[6 + 2 * i];
            assert_eq!((j.code, j.k, j.jt, j.jf), (BPF_JEQ_K, *nr as u32, 0, 1));
            assert_eq!(f[7 + 2 * i].k, SECCOMP_RET_ERRNO | libc::EPERM as u32);
        }
        // Calls the data path makes are not in the list.
        for nr in [
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_epoll_wait,
            libc::SYS_sendmmsg,
            libc::SYS_clone,
            libc::SYS_socket,
            libc::SYS_connect,
        ] {
            assert!(!denied.contains(&nr));
        }
    }

    /// Load the filter in a forked child and check that a denied call fails and an allowed one
    /// works (the parent's own process is left alone).
    #[test]
    fn the_loaded_filter_refuses_unshare_and_allows_getpid() {
        let program = filter();
        // SAFETY: the child only makes system calls (no allocation) and exits with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let code = match load(&program) {
                Err(_) => 2,
                Ok(()) => {
                    // SAFETY: raw system calls with integer arguments.
                    let refused = unsafe { libc::unshare(libc::CLONE_NEWUTS) } == -1
                        && io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
                    let pid_ok = unsafe { libc::getpid() } > 0;
                    if refused && pid_ok {
                        0
                    } else {
                        1
                    }
                }
            };
            // SAFETY: leaving the forked child without running the parent's destructors.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status));
        assert_eq!(
            libc::WEXITSTATUS(status),
            0,
            "seccomp filter misbehaved (2: could not load)"
        );
    }
}
