//! Unix socket files: how slipway creates, replaces and removes the socket files it listens on
//! (the API socket, guest links, unix forwards, gvproxy tunnels and sockets guests publish
//! through the guest API).
//!
//! Theory of operation: a socket file is named by a [`SocketPlace`], a directory opened once
//! (`O_PATH | O_DIRECTORY`) plus one file name in it. Everything after that goes through the
//! directory's descriptor: `fstatat(AT_SYMLINK_NOFOLLOW)` looks at the name, `unlinkat` removes
//! it, and `bind`/`connect` use `/proc/self/fd/DIR/NAME`, so the directory's path is not looked
//! up again (where `/proc` is missing, or that path would not fit a socket address, the
//! directory's path is used instead). The rules:
//! - nothing at the name: bind;
//! - a socket nobody listens on (a stale leftover): removed, then bind;
//! - a socket something listens on: refused ([`SocketFileError::InUse`]);
//! - anything else (a regular file, a symbolic link, a directory, a FIFO): refused and left
//!   alone ([`SocketFileError::NotASocket`]); slipway never removes what is not a socket;
//! - the socket file gets its mode at creation: the socket's inode is given `mode` before
//!   `bind`, and Linux creates the file with that mode less the umask (0600 by default), so
//!   there is no moment in which other users may connect;
//! - a [`SocketFile`] remembers the device and inode it created and removes the name only while
//!   both are unchanged: a file someone put there since is never removed.
//!
//! The event loop never does this file-system work itself (a hung network file system must not
//! stop the data path): unix forwards are bound by the API thread before they are handed over,
//! and the loop gives the files it is done with to [`remove_later`], which removes them on a
//! thread of its own.
//!
//! Limits: one file name of at most [`MAX_NAME`] bytes per place; a place in a directory given
//! to guests ([`SocketDir`]) takes a plain name only (no `/`, not `.` or `..`).

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, OnceLock};

/// The longest file name of a socket place (a socket address holds 107 bytes of path).
pub const MAX_NAME: usize = 100;

/// Why a socket file could not be created.
#[derive(Debug, thiserror::Error)]
pub enum SocketFileError {
    #[error(
        "{} is in use by a running program; stop that program or choose another socket path",
        .0.display()
    )]
    InUse(PathBuf),
    #[error("{} exists and is not a socket; slipway replaces only sockets: remove it or choose another path", .0.display())]
    NotASocket(PathBuf),
    #[error(
        "'{0}' is not a plain file name of at most {MAX_NAME} bytes (no '/', not '.' or '..')"
    )]
    BadName(String),
    #[error("cannot {what} {}: {source}; check that the directory exists and is writable", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl SocketFileError {
    fn io(what: &'static str, path: PathBuf, source: io::Error) -> Self {
        SocketFileError::Io { what, path, source }
    }

    /// A failure to listen on the socket at `path` after it was bound.
    pub fn io_at(path: PathBuf, source: io::Error) -> Self {
        SocketFileError::io("listen on", path, source)
    }
}

/// A directory socket files are created in, held open.
#[derive(Debug)]
pub struct SocketDir {
    fd: OwnedFd,
    path: PathBuf,
}

impl SocketDir {
    /// Open the directory `path` (symbolic links in `path` itself are followed: the owner chose
    /// it).
    pub fn open(path: &Path) -> io::Result<SocketDir> {
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL"))?;
        // SAFETY: `c` is a valid NUL-terminated string; the flags ask for a new descriptor.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(SocketDir {
            // SAFETY: `fd` was just returned by open and is owned by nobody else.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// One file name in one directory: where a socket is bound.
#[derive(Debug, Clone)]
pub struct SocketPlace {
    dir: Arc<SocketDir>,
    name: OsString,
    /// The path as the owner gave it (or the directory's joined with the name).
    path: PathBuf,
}

fn check_name(name: &OsStr) -> Result<(), SocketFileError> {
    let b = name.as_bytes();
    if b.is_empty() || b.len() > MAX_NAME || b == b"." || b == b".." || b.contains(&b'/') {
        return Err(SocketFileError::BadName(
            name.to_string_lossy().into_owned(),
        ));
    }
    if b.contains(&0) {
        return Err(SocketFileError::BadName(
            name.to_string_lossy().into_owned(),
        ));
    }
    Ok(())
}

impl SocketPlace {
    /// The place `path` names: its directory (opened now) and its last component.
    pub fn of_path(path: &Path) -> Result<SocketPlace, SocketFileError> {
        let name = path
            .file_name()
            .ok_or_else(|| SocketFileError::BadName(path.display().to_string()))?;
        check_name(name)?;
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let dir = SocketDir::open(parent)
            .map_err(|e| SocketFileError::io("open the directory of", path.to_owned(), e))?;
        Ok(SocketPlace {
            dir: Arc::new(dir),
            name: name.to_owned(),
            path: path.to_owned(),
        })
    }

    /// The place `name` in `dir`; `name` must be a plain file name.
    pub fn in_dir(dir: &Arc<SocketDir>, name: &OsStr) -> Result<SocketPlace, SocketFileError> {
        check_name(name)?;
        Ok(SocketPlace {
            dir: dir.clone(),
            name: name.to_owned(),
            path: dir.path.join(name),
        })
    }

    /// The path, for messages and listings.
    pub fn path(&self) -> PathBuf {
        self.path.clone()
    }

    fn c_name(&self) -> CString {
        // check_name refused NULs.
        CString::new(self.name.as_bytes()).expect("socket names hold no NUL")
    }

    /// The address to bind or connect to: through the directory's descriptor where possible.
    fn address(&self) -> io::Result<socket2::SockAddr> {
        let via_fd = format!("/proc/self/fd/{}", self.dir.fd.as_raw_fd());
        let mut p = PathBuf::from(&via_fd);
        p.push(&self.name);
        if p.as_os_str().len() < 108 && Path::new(&via_fd).is_dir() {
            return socket2::SockAddr::unix(p);
        }
        socket2::SockAddr::unix(self.path())
    }

    /// (device, inode, is a socket) of what is at the name now, without following a link.
    fn stat(&self) -> io::Result<Option<(u64, u64, bool)>> {
        let name = self.c_name();
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: the directory fd is open, `name` is NUL-terminated and `st` is writable
        // memory of the right type; fstatat fills it when it returns 0.
        let r = unsafe {
            libc::fstatat(
                self.dir.fd.as_raw_fd(),
                name.as_ptr(),
                st.as_mut_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if r != 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENOENT) => Ok(None),
                _ => Err(e),
            };
        }
        // SAFETY: fstatat returned 0, so it initialised `st`.
        let st = unsafe { st.assume_init() };
        let is_socket = st.st_mode & libc::S_IFMT == libc::S_IFSOCK;
        Ok(Some((st.st_dev, st.st_ino, is_socket)))
    }

    fn unlink(&self) -> io::Result<()> {
        let name = self.c_name();
        // SAFETY: the directory fd is open and `name` is NUL-terminated.
        let r = unsafe { libc::unlinkat(self.dir.fd.as_raw_fd(), name.as_ptr(), 0) };
        if r != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ENOENT) {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Make the name free for a socket of type `kind`: nothing there is fine; a socket nobody
    /// listens on is removed; a live socket or anything that is not a socket is an error.
    fn make_room(&self, kind: socket2::Type) -> Result<(), SocketFileError> {
        let path = self.path();
        let found = self
            .stat()
            .map_err(|e| SocketFileError::io("look at", path.clone(), e))?;
        match found {
            None => return Ok(()),
            Some((_, _, false)) => return Err(SocketFileError::NotASocket(path)),
            Some((_, _, true)) => {}
        }
        let fail = |e| SocketFileError::io("probe", path.clone(), e);
        let probe = socket2::Socket::new(socket2::Domain::UNIX, kind.nonblocking().cloexec(), None)
            .map_err(fail)?;
        let addr = self.address().map_err(fail)?;
        match probe.connect(&addr) {
            Ok(()) => Err(SocketFileError::InUse(path)),
            Err(e) => match e.raw_os_error() {
                Some(libc::ECONNREFUSED) => {
                    // Still the socket we looked at? (Never remove what is not a socket.)
                    match self.stat() {
                        Ok(Some((_, _, true))) => self
                            .unlink()
                            .map_err(|e| SocketFileError::io("remove the stale socket", path, e)),
                        Ok(None) => Ok(()),
                        Ok(Some((_, _, false))) => Err(SocketFileError::NotASocket(path)),
                        Err(e) => Err(SocketFileError::io("look at", path, e)),
                    }
                }
                Some(libc::ENOENT) => Ok(()),
                // Someone is there: listening with a full backlog, or a socket of another type.
                Some(libc::EAGAIN | libc::EINPROGRESS | libc::EPROTOTYPE) => {
                    Err(SocketFileError::InUse(path))
                }
                _ => Err(SocketFileError::io("probe", path, e)),
            },
        }
    }

    /// A new close-on-exec socket of type `kind` bound here, its file created with `mode`
    /// (less the umask). A stale socket file is replaced; anything else at the name is refused.
    pub fn bind(
        &self,
        kind: socket2::Type,
        mode: u32,
    ) -> Result<(socket2::Socket, SocketFile), SocketFileError> {
        self.make_room(kind)?;
        let path = self.path();
        let fail = |what| move |e| SocketFileError::io(what, self.path(), e);
        let socket = socket2::Socket::new(socket2::Domain::UNIX, kind.cloexec(), None)
            .map_err(fail("create a socket for"))?;
        // SAFETY: the socket fd is open; fchmod of a socket sets the mode its file gets.
        if unsafe { libc::fchmod(socket.as_raw_fd(), mode as libc::mode_t) } != 0 {
            return Err(fail("set the mode of")(io::Error::last_os_error()));
        }
        let addr = self.address().map_err(fail("bind"))?;
        if let Err(e) = socket.bind(&addr) {
            // Something appeared at the name since we looked: it is not ours.
            return Err(match e.raw_os_error() {
                Some(libc::EADDRINUSE) => SocketFileError::InUse(path),
                _ => SocketFileError::io("listen on", path, e),
            });
        }
        let (dev, ino) = match self.stat() {
            Ok(Some((dev, ino, true))) => (dev, ino),
            // Replaced between bind and this look: remember nothing, so nothing is removed.
            _ => (0, 0),
        };
        Ok((
            socket,
            SocketFile {
                place: self.clone(),
                dev,
                ino,
            },
        ))
    }
}

/// A socket file slipway created; removed on drop while it is still the same file.
#[derive(Debug)]
pub struct SocketFile {
    place: SocketPlace,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    pub fn path(&self) -> PathBuf {
        self.place.path()
    }

    pub fn place(&self) -> &SocketPlace {
        &self.place
    }

    /// Remove the file now if it is still the one we created (the same device and inode).
    fn remove(&mut self) {
        if self.ino == 0 {
            return;
        }
        if let Ok(Some((dev, ino, true))) = self.place.stat() {
            if dev == self.dev && ino == self.ino {
                let _ = self.place.unlink();
            }
        }
        self.ino = 0;
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Work for the thread that removes socket files for the event loop.
enum Removal {
    File(SocketFile),
    /// Answer once everything sent before is done.
    Flush(mpsc::SyncSender<()>),
}

static REMOVER: OnceLock<Mutex<mpsc::Sender<Removal>>> = OnceLock::new();

fn send_to_remover(job: Removal) -> Result<(), Removal> {
    let sender = REMOVER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Removal>();
        let spawned = std::thread::Builder::new()
            .name("slipway-files".into())
            .spawn(move || {
                for job in rx {
                    match job {
                        Removal::File(file) => drop(file),
                        Removal::Flush(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start the thread that removes socket files: {e}");
        }
        Mutex::new(tx)
    });
    match sender.lock() {
        Ok(tx) => tx.send(job).map_err(|e| e.0),
        Err(_) => Err(job),
    }
}

/// Remove `file` on another thread (as [`SocketFile`]'s drop would, without blocking the caller
/// on the file system). If that thread cannot be started, the file is removed here.
pub fn remove_later(file: SocketFile) {
    if let Err(job) = send_to_remover(Removal::File(file)) {
        drop(job);
    }
}

/// Wait until every file given to [`remove_later`] so far is handled (at exit).
pub fn wait_for_removals() {
    let (tx, rx) = mpsc::sync_channel(1);
    if send_to_remover(Removal::Flush(tx)).is_ok() {
        let _ = rx.recv();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

    struct TempDir(PathBuf);
    impl TempDir {
        fn new() -> TempDir {
            let mut p = std::env::temp_dir();
            let mut n = [0u8; 8];
            // SAFETY: getrandom writes at most 8 bytes into `n`.
            unsafe { libc::getrandom(n.as_mut_ptr().cast(), 8, 0) };
            p.push(format!("slipway-us-{}", u64::from_ne_bytes(n)));
            std::fs::create_dir(&p).unwrap();
            TempDir(p)
        }
        fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn listen(place: &SocketPlace) -> Result<(socket2::Socket, SocketFile), SocketFileError> {
        let (s, f) = place.bind(socket2::Type::STREAM, 0o600)?;
        s.listen(4).unwrap();
        Ok((s, f))
    }

    #[test]
    fn binds_with_its_mode_from_the_start_and_removes_its_own_file() {
        let dir = TempDir::new();
        let path = dir.path("a.sock");
        let place = SocketPlace::of_path(&path).unwrap();
        let (s, file) = listen(&place).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        std::os::unix::net::UnixStream::connect(&path).unwrap();
        drop(s);
        drop(file);
        assert!(!path.exists());
    }

    #[test]
    fn never_replaces_what_is_not_a_socket() {
        let dir = TempDir::new();
        let victim = dir.path("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let err = listen(&SocketPlace::of_path(&victim).unwrap()).unwrap_err();
        assert!(matches!(err, SocketFileError::NotASocket(_)), "{err}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");

        // A symbolic link (to the file, or dangling) is left alone too.
        let link = dir.path("link");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let err = listen(&SocketPlace::of_path(&link).unwrap()).unwrap_err();
        assert!(matches!(err, SocketFileError::NotASocket(_)), "{err}");
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        let dangling = dir.path("dangling");
        std::os::unix::fs::symlink(dir.path("nowhere"), &dangling).unwrap();
        let err = listen(&SocketPlace::of_path(&dangling).unwrap()).unwrap_err();
        assert!(matches!(err, SocketFileError::NotASocket(_)), "{err}");
        assert!(!dir.path("nowhere").exists());

        let sub = dir.path("sub");
        std::fs::create_dir(&sub).unwrap();
        let err = listen(&SocketPlace::of_path(&sub).unwrap()).unwrap_err();
        assert!(matches!(err, SocketFileError::NotASocket(_)), "{err}");
        assert!(sub.is_dir());
    }

    #[test]
    fn replaces_a_stale_socket_and_refuses_a_live_one() {
        let dir = TempDir::new();
        let path = dir.path("s.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let place = SocketPlace::of_path(&path).unwrap();
        let (live, _file) = listen(&place).unwrap();
        let err = listen(&place).unwrap_err();
        assert!(matches!(err, SocketFileError::InUse(_)), "{err}");
        assert!(err.to_string().contains("in use"));
        // A live socket of another type is in use too.
        let err = place.bind(socket2::Type::DGRAM, 0o600).unwrap_err();
        assert!(matches!(err, SocketFileError::InUse(_)), "{err}");
        drop(live);
    }

    #[test]
    fn removes_only_the_file_it_made() {
        let dir = TempDir::new();
        let path = dir.path("g.sock");
        let place = SocketPlace::of_path(&path).unwrap();
        let (s, file) = listen(&place).unwrap();
        // Replaced behind slipway's back by a regular file: that file stays.
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"someone else's").unwrap();
        drop(file);
        drop(s);
        assert_eq!(std::fs::read(&path).unwrap(), b"someone else's");
        std::fs::remove_file(&path).unwrap();

        // Replaced by another socket: that socket stays.
        let (s, file) = listen(&place).unwrap();
        std::fs::remove_file(&path).unwrap();
        let _other = std::os::unix::net::UnixListener::bind(&path).unwrap();
        drop(file);
        drop(s);
        assert!(std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_socket());
    }

    #[test]
    fn a_place_in_a_directory_takes_plain_names_only() {
        let dir = TempDir::new();
        let sockets = Arc::new(SocketDir::open(&dir.0).unwrap());
        for bad in ["", ".", "..", "../x", "a/b", "/etc/passwd"] {
            let err = SocketPlace::in_dir(&sockets, OsStr::new(bad)).unwrap_err();
            assert!(matches!(err, SocketFileError::BadName(_)), "{bad}: {err}");
        }
        let long = "x".repeat(MAX_NAME + 1);
        assert!(SocketPlace::in_dir(&sockets, OsStr::new(&long)).is_err());
        let place = SocketPlace::in_dir(&sockets, OsStr::new("ok.sock")).unwrap();
        let (_s, file) = listen(&place).unwrap();
        assert_eq!(file.path(), dir.path("ok.sock"));
        assert!(dir.path("ok.sock").exists());
        let ino = std::fs::symlink_metadata(dir.path("ok.sock"))
            .unwrap()
            .ino();
        assert_ne!(ino, 0);
    }

    #[test]
    fn remove_later_removes_on_another_thread() {
        let dir = TempDir::new();
        let path = dir.path("later.sock");
        let (s, file) = listen(&SocketPlace::of_path(&path).unwrap()).unwrap();
        drop(s);
        remove_later(file);
        wait_for_removals();
        assert!(!path.exists(), "{} was not removed", path.display());
    }
}
