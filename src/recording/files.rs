//! Reading segment files back: the init segment, and the samples of the fragments from an
//! offset on. Only box headers and moofs are read; the media bytes are skipped (playback
//! streams them later as file ranges). A fragment cut short (the end of a file being written,
//! or of one a crash interrupted) ends the scan.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use bytes::Bytes;

use super::playback::{parse_moof, Sample};

/// A moof larger than this is not one livelens wrote.
const MAX_MOOF: u64 = 1 << 20;

fn header(r: &mut impl Read) -> std::io::Result<Option<(u64, [u8; 4], u64)>> {
    let mut h = [0u8; 8];
    match r.read_exact(&mut h) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let kind: [u8; 4] = h[4..8].try_into().unwrap();
    let size = u64::from(u32::from_be_bytes(h[0..4].try_into().unwrap()));
    if size == 1 {
        let mut large = [0u8; 8];
        r.read_exact(&mut large)?;
        return Ok(Some((u64::from_be_bytes(large), kind, 16)));
    }
    Ok(Some((size, kind, 8)))
}

/// The init segment (ftyp + moov) at the start of a segment file.
pub fn read_init(path: &Path) -> Result<Bytes, String> {
    let mut r = BufReader::new(File::open(path).map_err(|e| format!("{}: {e}", path.display()))?);
    let mut out = Vec::new();
    while let Some((size, kind, header_len)) = header(&mut r).map_err(|e| e.to_string())? {
        if size < header_len || size > MAX_MOOF {
            break;
        }
        let mut body = vec![0u8; (size - header_len) as usize];
        r.read_exact(&mut body).map_err(|e| e.to_string())?;
        out.extend_from_slice(&(size as u32).to_be_bytes());
        out.extend_from_slice(&kind);
        out.extend_from_slice(&body);
        if &kind == b"moov" {
            return Ok(Bytes::from(out));
        }
    }
    Err(format!("{}: no init segment", path.display()))
}

/// What a scan found: the samples in file order, and where the last complete fragment ends.
pub struct Scanned {
    pub samples: Vec<Sample>,
    pub end: u64,
}

/// The samples of the fragments from `from` on, until `stop` says a sample is past what is
/// wanted (that fragment and the rest are not read).
pub fn scan(
    path: &Path,
    from: u64,
    mut stop: impl FnMut(&Sample) -> bool,
) -> Result<Scanned, String> {
    let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let mut r = BufReader::with_capacity(16 * 1024, file);
    r.seek(SeekFrom::Start(from)).map_err(|e| e.to_string())?;
    let mut at = from;
    let mut samples = Vec::new();
    let mut end = from;
    let mut pending: Vec<Sample> = Vec::new();
    while let Some((size, kind, header_len)) = header(&mut r).map_err(|e| e.to_string())? {
        if size < header_len || at.saturating_add(size) > len {
            break;
        }
        match &kind {
            b"moof" if size <= MAX_MOOF => {
                let mut moof = vec![0u8; size as usize];
                moof[..4].copy_from_slice(&(size as u32).to_be_bytes());
                moof[4..8].copy_from_slice(b"moof");
                r.read_exact(&mut moof[8..]).map_err(|e| e.to_string())?;
                let found = parse_moof(&moof, at)?;
                if found.iter().any(&mut stop) {
                    break;
                }
                pending = found;
            }
            _ => {
                r.seek_relative((size - header_len) as i64)
                    .map_err(|e| e.to_string())?;
                if &kind == b"mdat" {
                    // A fragment is complete once its media bytes are all there, and whole
                    // when every sample its moof names is inside them (a damaged file could
                    // name any bytes, or gigabytes).
                    let inside = |s: &Sample| {
                        s.offset >= at + header_len
                            && s.offset.saturating_add(u64::from(s.size)) <= at + size
                    };
                    if !pending.iter().all(inside) {
                        break;
                    }
                    samples.append(&mut pending);
                    end = at + size;
                }
            }
        }
        at += size;
    }
    Ok(Scanned { samples, end })
}
