//! Which filesystems may hold the store. redb relies on `fsync` and file locks that network
//! filesystems do not honour, and memory filesystems lose everything on reboot.

/// Verdict on a data directory's filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsVerdict {
    /// A local, persistent filesystem.
    Supported,
    /// Refused, with the filesystem's name for the message.
    Unsupported(&'static str),
}

/// `statfs(2)` magic numbers of the refused filesystems.
const REFUSED: &[(i64, &str)] = &[
    (0x6969, "nfs"),
    (0x0102_1994, "tmpfs"),
    (0x8584_58f6, "ramfs"),
    (0xff53_4d42, "cifs"),
    (0xfe53_4d42, "smb2"),
    (0x517b, "smb"),
];

/// Classifies a filesystem by its `statfs` `f_type`.
pub fn classify(magic: i64) -> FsVerdict {
    REFUSED
        .iter()
        .find(|(m, _)| *m == magic)
        .map_or(FsVerdict::Supported, |(_, name)| FsVerdict::Unsupported(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_and_memory_filesystems_are_refused() {
        assert_eq!(classify(0x6969), FsVerdict::Unsupported("nfs"));
        assert_eq!(classify(0x0102_1994), FsVerdict::Unsupported("tmpfs"));
        assert_eq!(classify(0x8584_58f6), FsVerdict::Unsupported("ramfs"));
    }

    #[test]
    fn local_filesystems_are_supported() {
        for magic in [0xef53, 0x9123_683e, 0x5846_5342, 0x794c_7630] {
            // ext4, btrfs, xfs, overlayfs
            assert_eq!(classify(magic), FsVerdict::Supported);
        }
    }
}
