#!/usr/bin/env python3
"""Two small jobs for build-guest.sh that need no cpio, kmod or root.

  mkinitramfs.py moddeps MODULES_DIR NAME...
      Prints, one per line as "NAME PATH", the modules needed to load NAME... with every
      dependency before its users (read from each .ko's "depends=" modinfo string, since the
      Debian package ships no modules.dep). Modules listed in modules.builtin are skipped.

  mkinitramfs.py vmlinux BZIMAGE OUTPUT
      Unpacks the ELF kernel (vmlinux) from a bzImage compressed with xz or gzip and writes it to
      OUTPUT if it carries a PVH entry point (Xen ELF note 18): QEMU then starts it directly in
      32-bit mode, which skips the guest's self-decompression (about 3 s under TCG). Exits 3 and
      writes nothing when that is not possible; the caller then boots the bzImage.

  mkinitramfs.py cpio STAGING_DIR OUTPUT
      Writes STAGING_DIR as a gzip-compressed "newc" cpio archive, reproducibly (sorted names,
      mtime 0, owner root), plus the device node /dev/console (5,1) that the kernel needs before
      /init runs and that cannot be created in STAGING_DIR without privileges.
"""

import gzip
import lzma
import os
import stat
import struct
import sys
import zlib


def modinfo_field(path, field):
    data = open(path, "rb").read()
    key = field.encode() + b"="
    start = 0
    while True:
        i = data.find(key, start)
        if i < 0:
            return None
        # modinfo strings are NUL-separated; the key must start a string.
        if i == 0 or data[i - 1] == 0:
            j = data.index(b"\0", i)
            return data[i + len(key) : j].decode()
        start = i + 1


def moddeps(moddir, wanted):
    files = {}
    for root, _dirs, names in os.walk(os.path.join(moddir, "kernel")):
        for n in names:
            if n.endswith(".ko"):
                files[n[:-3].replace("-", "_")] = os.path.join(root, n)
    builtin = set()
    bpath = os.path.join(moddir, "modules.builtin")
    if os.path.exists(bpath):
        for line in open(bpath):
            builtin.add(os.path.basename(line.strip())[:-3].replace("-", "_"))

    order, done, active = [], set(), set()

    def visit(name):
        name = name.replace("-", "_")
        if name in done or name in builtin:
            return
        if name in active:
            sys.exit(f"moddeps: dependency cycle at {name}")
        if name not in files:
            sys.exit(f"moddeps: module {name} not found under {moddir}/kernel")
        active.add(name)
        deps = modinfo_field(files[name], "depends") or ""
        for d in filter(None, deps.split(",")):
            visit(d)
        active.discard(name)
        done.add(name)
        order.append(name)

    for w in wanted:
        visit(w)
    for name in order:
        print(name, files[name])


def cpio_entry(out, ino, name, mode, data=b"", nlink=1, rdev=(0, 0)):
    name_b = name.encode() + b"\0"
    hdr = "070701" + "".join(
        f"{v:08x}"
        for v in (ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(name_b), 0)
    )
    out.write(hdr.encode() + name_b)
    out.write(b"\0" * (-(110 + len(name_b)) % 4))
    out.write(data)
    out.write(b"\0" * (-len(data) % 4))


def write_cpio(staging, output):
    entries = []
    for root, dirs, names in os.walk(staging):
        dirs.sort()
        for n in sorted(dirs + names):
            full = os.path.join(root, n)
            entries.append((os.path.relpath(full, staging), full))
    entries.sort()
    tmp = output + ".tmp"
    with open(tmp, "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as out:
            ino = 1
            for rel, full in entries:
                st = os.lstat(full)
                perm = stat.S_IMODE(st.st_mode)
                if stat.S_ISLNK(st.st_mode):
                    cpio_entry(out, ino, rel, stat.S_IFLNK | 0o777, os.readlink(full).encode())
                elif stat.S_ISDIR(st.st_mode):
                    cpio_entry(out, ino, rel, stat.S_IFDIR | perm, nlink=2)
                elif stat.S_ISREG(st.st_mode):
                    with open(full, "rb") as f:
                        cpio_entry(out, ino, rel, stat.S_IFREG | perm, f.read())
                else:
                    sys.exit(f"cpio: unsupported file type: {full}")
                ino += 1
            cpio_entry(out, ino, "dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1))
            cpio_entry(out, 0, "TRAILER!!!", 0)
    os.replace(tmp, output)


def has_pvh_note(elf):
    if elf[:4] != b"\x7fELF" or elf[4] != 2:  # 64-bit ELF only
        return False
    (phoff,) = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(phnum):
        p_type, _flags, p_offset, _va, _pa, p_filesz = struct.unpack_from(
            "<IIQQQQ", elf, phoff + i * phentsize
        )
        if p_type != 4:  # PT_NOTE
            continue
        off, end = p_offset, p_offset + p_filesz
        while off + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", elf, off)
            name = elf[off + 12 : off + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and ntype == 18:
                return True
            off += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


def extract_vmlinux(bzimage, output):
    data = open(bzimage, "rb").read()
    candidates = [
        (b"\xfd7zXZ\x00", lambda: lzma.LZMADecompressor(format=lzma.FORMAT_XZ)),
        (b"\x1f\x8b\x08", lambda: zlib.decompressobj(16 + zlib.MAX_WBITS)),
    ]
    for magic, make in candidates:
        start = 0
        while True:
            i = data.find(magic, start)
            if i < 0:
                break
            start = i + 1
            try:
                elf = make().decompress(data[i:])
            except (lzma.LZMAError, zlib.error, EOFError):
                continue
            if has_pvh_note(elf):
                tmp = output + ".tmp"
                with open(tmp, "wb") as f:
                    f.write(elf)
                os.replace(tmp, output)
                return
    sys.stderr.write(f"vmlinux: no PVH-capable ELF kernel inside {bzimage}\n")
    sys.exit(3)


def main(argv):
    if len(argv) >= 3 and argv[1] == "moddeps":
        moddeps(argv[2], argv[3:])
    elif len(argv) == 4 and argv[1] == "vmlinux":
        extract_vmlinux(argv[2], argv[3])
    elif len(argv) == 4 and argv[1] == "cpio":
        write_cpio(argv[2], argv[3])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
