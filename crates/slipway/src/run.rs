//! `slipway run [OPTIONS] -- COMMAND [ARGS]`: a command in a new user and network namespace
//! whose network is slipway.
//!
//! # Theory of operation
//!
//! [`spawn`] forks while slipway still has a single thread, so the child may do anything
//! before it execs. The child:
//! 1. asks for SIGKILL if slipway dies (`PR_SET_PDEATHSIG`), so no command outlives its network;
//! 2. `unshare(CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWNS)` and maps itself to root inside,
//!    its own uid and gid only (`setgroups` denied, as `unshare -r` does). Root needs no user
//!    namespace for this and gets none: its command keeps real root and every file's owner;
//! 3. creates and configures the TAP in its new namespace ([`crate::netns::open_tap_here`]: lo
//!    and the TAP up, address, MTU, default route), passes the fd to slipway over a seqpacket
//!    socket pair with `SCM_RIGHTS`, and waits for slipway's go-ahead (sent once the network
//!    runs, so the command's first packet is never lost);
//! 4. makes every mount private and bind-mounts a resolv.conf naming the gateway's DNS over
//!    `/etc/resolv.conf` (the host's file is untouched; the temporary file is unlinked at once);
//! 5. execs COMMAND. Errors before the exec are sent to slipway as text and reported there.
//!
//! slipway serves the TAP like any guest, forwards SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and
//! SIGUSR2 to the command, and exits with its status (128 + N when it was killed by signal N)
//! once it exits. The namespaces disappear with the command and its descendants; a descendant
//! left behind loses its network when slipway exits.
//!
//! Limits: a normal user's command runs as root of the new user namespace (uid 0 inside), like
//! `unshare -r` and `podman unshare`; files of other users appear as nobody. Without /etc/resolv.conf on the host, none is provided.

use crate::netns::{self, helper, TapSetup};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The command's side, as slipway holds it.
pub struct Child {
    pub pid: libc::pid_t,
    /// The TAP inside the command's namespace.
    pub tap: OwnedFd,
    /// Send the go-ahead on this.
    control: OwnedFd,
}

impl Child {
    /// Let the command run (once the network does).
    pub fn go(&self) -> io::Result<()> {
        helper::send(self.control.as_raw_fd(), "go", None)
    }
}

/// What the child needs to know.
pub struct Spec<'a> {
    pub command: &'a [String],
    pub setup: &'a TapSetup,
    /// The resolv.conf to bind over /etc/resolv.conf (already written; the child unlinks it).
    pub resolv_conf: Option<&'a Path>,
}

/// Fork the child (see the module's docs). Must be called while the process has one thread.
pub fn spawn(spec: &Spec<'_>) -> Result<Child, String> {
    if spec.command.is_empty() {
        return Err("no command given: slipway run [OPTIONS] -- COMMAND [ARGS]".into());
    }
    // Everything the child needs is prepared before the fork.
    let argv: Vec<CString> = spec
        .command
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|_| "the command contains a NUL byte".to_string())?;
    let (ours, theirs) =
        helper::seqpacket_pair().map_err(|e| format!("creating a socket pair: {e}"))?;
    // SAFETY: identity queries only read.
    let (uid, gid, parent) = unsafe { (libc::geteuid(), libc::getegid(), libc::getpid()) };
    // SAFETY: the caller guarantees a single thread, so the child may allocate and lock.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", io::Error::last_os_error()));
    }
    if pid == 0 {
        drop(ours);
        let code = child(spec, &argv, &theirs, uid, gid, parent);
        // SAFETY: leaving the child without running the parent's destructors or atexit hooks.
        unsafe { libc::_exit(code) };
    }
    drop(theirs);
    let answer = helper::receive(&ours);
    let fail = |text: String| {
        let mut status = 0;
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        Err(text)
    };
    match answer {
        Ok((_, Some(tap))) => Ok(Child {
            pid,
            tap,
            control: ours,
        }),
        Ok((text, None)) if !text.trim().is_empty() => fail(text),
        Ok(_) => fail("the command's namespace could not be set up (its process exited)".into()),
        Err(e) => fail(format!("waiting for the command's namespace: {e}")),
    }
}

/// The child, up to exec. Returns the exit code when it cannot exec.
fn child(
    spec: &Spec<'_>,
    argv: &[CString],
    sock: &OwnedFd,
    uid: libc::uid_t,
    gid: libc::gid_t,
    parent: libc::pid_t,
) -> i32 {
    let report = |text: String| {
        let _ = helper::send(sock.as_raw_fd(), &text, None);
        125
    };
    // SAFETY: prctl/getppid with integer arguments.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        if libc::getppid() != parent {
            return 125;
        }
    }
    if let Err(e) = enter_namespaces(uid, gid) {
        return report(e);
    }
    let tap = match netns::open_tap_here(spec.setup) {
        Ok(fd) => fd,
        Err(e) => return report(format!("setting up the namespace's network: {e}")),
    };
    if let Err(e) = helper::send(sock.as_raw_fd(), "", Some(tap.as_raw_fd())) {
        return report(format!("passing the TAP to slipway: {e}"));
    }
    drop(tap);
    // The go-ahead; an error or EOF means slipway is gone.
    match helper::receive(sock) {
        Ok((text, _)) if text == "go" => {}
        _ => return 125,
    }
    if let Some(resolv) = spec.resolv_conf {
        if let Err(e) = bind_resolv_conf(resolv) {
            eprintln!("slipway run: {e}; the command keeps the host's /etc/resolv.conf");
        }
        let _ = std::fs::remove_file(resolv);
    }
    // SAFETY: argv is a NULL-terminated array of valid C strings that outlive the call.
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    unsafe { libc::execvp(ptrs[0], ptrs.as_ptr()) };
    let err = io::Error::last_os_error();
    eprintln!("slipway run: cannot run {}: {err}", spec.command[0]);
    if err.raw_os_error() == Some(libc::ENOENT) {
        127
    } else {
        126
    }
}

fn enter_namespaces(uid: libc::uid_t, gid: libc::gid_t) -> Result<(), String> {
    let mut flags = libc::CLONE_NEWNET | libc::CLONE_NEWNS;
    if uid != 0 {
        flags |= libc::CLONE_NEWUSER;
    }
    // SAFETY: unshare on this single-threaded process.
    let rc = unsafe { libc::unshare(flags) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(format!(
            "creating a user and network namespace: {e}; unprivileged user namespaces may be off \
             (sysctl kernel.unprivileged_userns_clone=1, or user.max_user_namespaces > 0)"
        ));
    }
    let write = |path: &str, text: &str| {
        std::fs::write(path, text).map_err(|e| format!("writing {path}: {e}"))
    };
    if uid != 0 {
        write("/proc/self/setgroups", "deny")?;
        write("/proc/self/uid_map", &format!("0 {uid} 1"))?;
        write("/proc/self/gid_map", &format!("0 {gid} 1"))?;
    }
    Ok(())
}

fn bind_resolv_conf(source: &Path) -> Result<(), String> {
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| "NUL in path".to_string())
    };
    let root = CString::new("/").expect("constant");
    // SAFETY: valid C strings; no data argument.
    let rc = unsafe {
        libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(format!(
            "making mounts private: {}",
            io::Error::last_os_error()
        ));
    }
    let target = PathBuf::from("/etc/resolv.conf");
    let (src, dst) = (c(source)?, c(&target)?);
    // SAFETY: valid C strings; a bind mount takes no file system type or data.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(format!(
            "cannot bind a resolv.conf over /etc/resolv.conf: {}",
            io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// The command's resolv.conf: the gateway's DNS and the host's search list.
pub fn resolv_conf_text(dns: std::net::Ipv4Addr, search: &[String]) -> String {
    let mut s = format!("# written by slipway run: the network's DNS server\nnameserver {dns}\n");
    if !search.is_empty() {
        s.push_str(&format!("search {}\n", search.join(" ")));
    }
    s
}

/// An exit status as a shell reports it: the code, or 128 + the signal.
pub fn exit_code(status: libc::c_int) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_names_the_gateway() {
        assert_eq!(
            resolv_conf_text("10.0.2.3".parse().unwrap(), &["corp.example".into()]),
            "# written by slipway run: the network's DNS server\nnameserver 10.0.2.3\nsearch corp.example\n"
        );
        assert!(!resolv_conf_text("10.0.2.3".parse().unwrap(), &[]).contains("search"));
    }

    #[test]
    fn exit_codes_follow_the_shell() {
        assert_eq!(exit_code(3 << 8), 3);
        assert_eq!(exit_code(libc::SIGTERM), 128 + 15);
    }
}
