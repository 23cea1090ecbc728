//! A reproducible newc cpio writer for the guest's initramfs.
//!
//! Entries are sorted by path, owned by root, with mtime 0 and inode numbers by position, so the
//! same inputs give the same bytes. Uncompressed: the kernel needs no decompressor, and the image
//! is built and read faster than gzip would save.

use std::collections::BTreeMap;

#[derive(Clone, Debug)]
enum Kind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    CharDev(u32, u32),
}

#[derive(Clone, Debug)]
struct Entry {
    mode: u32,
    kind: Kind,
}

/// An initramfs being assembled.
#[derive(Default)]
pub struct Initramfs {
    entries: BTreeMap<String, Entry>,
}

impl Initramfs {
    pub fn new() -> Self {
        Self::default()
    }

    fn parents(&mut self, path: &str) {
        let mut p = String::new();
        let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        for c in comps.iter().take(comps.len().saturating_sub(1)) {
            if !p.is_empty() {
                p.push('/');
            }
            p.push_str(c);
            self.entries.entry(p.clone()).or_insert(Entry {
                mode: 0o755,
                kind: Kind::Dir,
            });
        }
    }

    fn key(path: &str) -> String {
        path.trim_start_matches('/').to_string()
    }

    pub fn dir(&mut self, path: &str) -> &mut Self {
        self.parents(path);
        self.entries.insert(
            Self::key(path),
            Entry {
                mode: 0o755,
                kind: Kind::Dir,
            },
        );
        self
    }

    pub fn file(&mut self, path: &str, mode: u32, data: Vec<u8>) -> &mut Self {
        self.parents(path);
        self.entries.insert(
            Self::key(path),
            Entry {
                mode,
                kind: Kind::File(data),
            },
        );
        self
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.parents(path);
        self.entries.insert(
            Self::key(path),
            Entry {
                mode: 0o777,
                kind: Kind::Symlink(target.into()),
            },
        );
        self
    }

    pub fn char_dev(&mut self, path: &str, mode: u32, major: u32, minor: u32) -> &mut Self {
        self.parents(path);
        self.entries.insert(
            Self::key(path),
            Entry {
                mode,
                kind: Kind::CharDev(major, minor),
            },
        );
        self
    }

    /// The archive in newc format.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (ino, (name, e)) in self.entries.iter().enumerate() {
            let (type_bits, data, rdev): (u32, &[u8], (u32, u32)) = match &e.kind {
                Kind::Dir => (0o040000, &[], (0, 0)),
                Kind::File(d) => (0o100000, d, (0, 0)),
                Kind::Symlink(t) => (0o120000, t.as_bytes(), (0, 0)),
                Kind::CharDev(ma, mi) => (0o020000, &[], (*ma, *mi)),
            };
            let nlink = if matches!(e.kind, Kind::Dir) { 2 } else { 1 };
            header(
                &mut out,
                ino as u32 + 1,
                type_bits | e.mode,
                nlink,
                data.len(),
                rdev,
                name,
            );
            out.extend_from_slice(data);
            pad4(&mut out);
        }
        header(&mut out, 0, 0, 1, 0, (0, 0), "TRAILER!!!");
        out
    }
}

fn header(
    out: &mut Vec<u8>,
    ino: u32,
    mode: u32,
    nlink: u32,
    size: usize,
    rdev: (u32, u32),
    name: &str,
) {
    let fields = [
        ino,
        mode,
        0,
        0,
        nlink,
        0,
        size as u32,
        0,
        0,
        rdev.0,
        rdev.1,
        name.len() as u32 + 1,
        0,
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08X}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_reproducible_and_order_independent() {
        let mut a = Initramfs::new();
        a.file("/bin/x", 0o755, b"abc".to_vec())
            .dir("/proc")
            .symlink("/bin/sh", "busybox");
        let mut b = Initramfs::new();
        b.symlink("/bin/sh", "busybox")
            .dir("/proc")
            .file("/bin/x", 0o755, b"abc".to_vec());
        assert_eq!(a.to_bytes(), b.to_bytes());
    }

    #[test]
    fn newc_layout_is_aligned_with_parents_and_trailer() {
        let mut a = Initramfs::new();
        a.file("/lib/modules/m.ko", 0o644, vec![1; 5]);
        let bytes = a.to_bytes();
        assert_eq!(bytes.len() % 4, 0);
        let text = String::from_utf8_lossy(&bytes);
        // Parents come first (sorted), then the file, then the trailer.
        let lib = text.find("lib\0").unwrap();
        let modules = text.find("lib/modules\0").unwrap();
        let file = text.find("lib/modules/m.ko\0").unwrap();
        let trailer = text.find("TRAILER!!!\0").unwrap();
        assert!(lib < modules && modules < file && file < trailer);
        assert!(text.starts_with("070701"));
        // File size field (7th) of the third entry is 5.
        let hdr = &text[file - 110..file];
        assert_eq!(&hdr[6 + 6 * 8..6 + 7 * 8], "00000005");
    }

    #[test]
    fn cpio_tool_lists_what_we_wrote() {
        // ci/install-deps.sh installs cpio: its absence is a failure, not a skip.
        let sh = xshell::Shell::new().unwrap();
        let mut a = Initramfs::new();
        a.file("/init", 0o755, b"#!/bin/sh\n".to_vec())
            .char_dev("/dev/console", 0o600, 5, 1);
        let dir = std::env::temp_dir().join(format!("pcmsig-cpio-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.cpio");
        std::fs::write(&path, a.to_bytes()).unwrap();
        let names = xshell::cmd!(sh, "cpio -it -F {path}")
            .quiet()
            .read()
            .expect("cpio (package: cpio)");
        assert_eq!(
            names.lines().collect::<Vec<_>>(),
            vec!["dev", "dev/console", "init"]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
