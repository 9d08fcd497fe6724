//! Verified-streaming outboards of stored bodies (BLAKE3 trees with 16 KiB chunk groups, the
//! `bao-tree` crate's post-order format): made from a finished body file, kept beside its blob as
//! `objects/ab/cdef….obao`, read back to serve verified pieces. Blocking file I/O only; which
//! blobs exist, and when files are renamed or deleted, is the store's business.
//!
//! The root of such a tree is the plain blake3 hash of the body, so the hashes that entries,
//! rows and gossip already carry name the tree too. An outboard holds one pair of child hashes
//! (64 bytes) per inner node: about 64 bytes per 16 KiB of body (0.4 %). A body of at most one
//! chunk group has no inner node, hence no outboard file.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use bao_tree::io::outboard::PostOrderOutboard;
use bao_tree::io::sync::ReadAt;
use bao_tree::{BaoTree, BlockSize};

/// Chunk groups of 16 chunks of 1 KiB: the unit a peer's copy is verified in.
pub const BLOCK: BlockSize = BlockSize::from_chunk_log(4);
/// Bytes in one chunk group.
pub const GROUP_BYTES: u64 = 16 * 1024;
/// File name suffix of an outboard beside its blob.
pub const SUFFIX: &str = ".obao";

/// Outboards up to this size (bodies up to 64 MiB) are read into memory to serve from, which
/// spares a `pread` per parent hash; larger ones are read from their file as needed.
const IN_MEMORY: u64 = 256 * 1024;

/// An outboard ready to serve from: the tree of a body of known length, its root hash and its
/// hash pairs (a file, or nothing for a body of one chunk group).
pub type Outboard = PostOrderOutboard<Box<dyn ReadAt + Send>>;

/// The tree shape of a body of `len` bytes.
pub fn tree(len: u64) -> BaoTree {
    BaoTree::new(len, BLOCK)
}

/// Size in bytes of the outboard of a body of `len` bytes (0: no file needed).
pub fn size(len: u64) -> u64 {
    tree(len).outboard_size()
}

/// Where the outboard of the blob at `blob` lives.
pub fn beside(blob: &Path) -> PathBuf {
    let mut name = blob.as_os_str().to_owned();
    name.push(SUFFIX);
    PathBuf::from(name)
}

/// Writes the outboard of the `len`-byte body in `body` to `out` (created or truncated) and
/// returns the tree's root hash, which is the body's blake3 hash. Writes nothing when the body
/// needs no outboard.
pub fn make(body: &File, len: u64, out: &Path) -> io::Result<blake3::Hash> {
    let reader = BufReader::with_capacity(256 * 1024, ReadFrom { file: body, at: 0 });
    if size(len) == 0 {
        let mut buf = Vec::new();
        io::Read::read_to_end(&mut io::Read::take(reader, len), &mut buf)?;
        if buf.len() as u64 != len {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        return Ok(blake3::hash(&buf));
    }
    let mut w = BufWriter::new(File::create(out)?);
    let root = bao_tree::io::sync::outboard_post_order(reader, tree(len), &mut w)?;
    w.flush()?;
    Ok(root)
}

/// Opens the outboard of a `len`-byte body with root `hash` kept at `path`; `None` when the body
/// needs one and the file is missing or not of the right size.
pub fn open(path: &Path, hash: blake3::Hash, len: u64) -> Option<Outboard> {
    let want = size(len);
    let data: Box<dyn ReadAt + Send> = if want == 0 {
        Box::new(Vec::new())
    } else {
        let f = File::open(path).ok()?;
        if f.metadata().ok()?.len() != want {
            return None;
        }
        if want <= IN_MEMORY {
            let mut bytes = Vec::with_capacity(want as usize);
            io::Read::read_to_end(&mut &f, &mut bytes).ok()?;
            Box::new(bytes)
        } else {
            Box::new(f)
        }
    };
    Some(PostOrderOutboard {
        root: hash,
        tree: tree(len),
        data,
    })
}

/// Deletes the outboard at `path`, if any.
pub fn remove(path: &Path) {
    let _ = fs::remove_file(path);
}

/// Sequential reads from a shared file handle without moving its cursor.
struct ReadFrom<'a> {
    file: &'a File,
    at: u64,
}

impl io::Read for ReadFrom<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = std::os::unix::fs::FileExt::read_at(self.file, buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bao_tree::io::outboard::PostOrderMemOutboard;
    use bao_tree::io::sync::Outboard as _;

    fn body(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 1000) as u8).collect()
    }

    /// Lengths around every boundary that changes the tree: empty, one byte, a chunk, a group,
    /// a group and a byte, two groups, a power of two of groups and one more.
    const LENGTHS: [usize; 11] = [
        0, 1, 1023, 1024, 16_383, 16_384, 16_385, 32_768, 49_157, 262_144, 262_145,
    ];

    #[test]
    fn the_root_is_the_plain_blake3_hash_and_the_file_matches_bao_tree() {
        let dir = tempfile::tempdir().unwrap();
        for len in LENGTHS {
            let data = body(len);
            let blob = dir.path().join(format!("b{len}"));
            fs::write(&blob, &data).unwrap();
            let out = beside(&blob);
            let root = make(&File::open(&blob).unwrap(), len as u64, &out).unwrap();
            assert_eq!(root, blake3::hash(&data), "len {len}");
            let reference = PostOrderMemOutboard::create(&data, BLOCK);
            assert_eq!(reference.root, root, "len {len}");
            if len as u64 <= GROUP_BYTES {
                assert!(!out.exists(), "len {len}: one group needs no file");
                assert_eq!(size(len as u64), 0);
            } else {
                assert_eq!(fs::read(&out).unwrap(), reference.data, "len {len}");
                assert_eq!(size(len as u64), reference.data.len() as u64);
            }
            let ob = open(&out, root, len as u64).expect("opens");
            assert_eq!((ob.root(), ob.tree()), (root, tree(len as u64)));
        }
    }

    #[test]
    fn an_outboard_of_the_wrong_size_or_a_missing_one_is_not_opened() {
        let dir = tempfile::tempdir().unwrap();
        let data = body(100_000);
        let blob = dir.path().join("b");
        fs::write(&blob, &data).unwrap();
        let out = beside(&blob);
        assert_eq!(out.file_name().unwrap().to_str().unwrap(), "b.obao");
        let hash = blake3::hash(&data);
        assert!(open(&out, hash, 100_000).is_none());
        make(&File::open(&blob).unwrap(), 100_000, &out).unwrap();
        assert!(open(&out, hash, 100_000).is_some());
        let mut bytes = fs::read(&out).unwrap();
        bytes.pop();
        fs::write(&out, bytes).unwrap();
        assert!(open(&out, hash, 100_000).is_none());
        remove(&out);
        assert!(!out.exists());
    }

    #[test]
    fn a_body_shorter_than_its_length_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let blob = dir.path().join("b");
        fs::write(&blob, body(10)).unwrap();
        let f = File::open(&blob).unwrap();
        assert!(make(&f, 11, &beside(&blob)).is_err());
        fs::write(&blob, body(40_000)).unwrap();
        let f = File::open(&blob).unwrap();
        assert!(make(&f, 50_000, &beside(&blob)).is_err());
    }
}
