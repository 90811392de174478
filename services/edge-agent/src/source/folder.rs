//! An image folder: every JPEG/PNG file in name order, `repeat` times; or, watched, every
//! file that appears in it, once, as it appears.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::{Captured, EncodedImage, FrameSource, Next};

/// How often a watched folder is listed.
const POLL: Duration = Duration::from_millis(200);
/// A new file is taken once it has not changed for this long, so a writer that is still
/// copying it in is not read half-way (writers that rename into place are seen at once).
const SETTLE: Duration = Duration::from_millis(300);

/// Images of a folder.
pub struct FolderSource {
    dir: PathBuf,
    files: Vec<PathBuf>,
    repeat: usize,
    index: usize,
    /// Watch mode: names already taken.
    watched: Option<HashSet<PathBuf>>,
}

impl FolderSource {
    /// Lists the folder `repeat` times; an empty or missing folder is an error naming it.
    pub fn open(dir: &Path, repeat: usize) -> anyhow::Result<Self> {
        let files = list_images(dir)?;
        if files.is_empty() {
            anyhow::bail!("no .jpg, .jpeg or .png files in {}", dir.display());
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            files,
            repeat: repeat.max(1),
            index: 0,
            watched: None,
        })
    }

    /// Watches the folder: the images in it now, then each new one, until stopped. A
    /// missing folder is an error naming it; an empty one is fine.
    pub fn watch(dir: &Path) -> anyhow::Result<Self> {
        let files = list_images(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            files,
            repeat: 1,
            index: 0,
            watched: Some(HashSet::new()),
        })
    }

    fn next_watched(&mut self) -> anyhow::Result<Next> {
        let seen = self.watched.as_mut().expect("watch mode");
        while let Some(path) = self.files.get(self.index).cloned() {
            self.index += 1;
            if seen.insert(path.clone()) {
                return read(&path).map(Next::Frame);
            }
        }
        std::thread::sleep(POLL);
        let now = SystemTime::now();
        self.files = list_images(&self.dir)?
            .into_iter()
            .filter(|p| !seen.contains(p) && settled(p, now))
            .collect();
        self.index = 0;
        Ok(Next::Idle)
    }
}

impl FrameSource for FolderSource {
    fn next(&mut self) -> anyhow::Result<Next> {
        if self.watched.is_some() {
            return self.next_watched();
        }
        if self.index >= self.files.len() * self.repeat {
            return Ok(Next::Finished);
        }
        let path = self.files[self.index % self.files.len()].clone();
        self.index += 1;
        read(&path).map(Next::Frame)
    }
}

fn list_images(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("cannot read image folder {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_image(p).is_some())
        .collect();
    files.sort();
    Ok(files)
}

/// `Some(true)` for PNG, `Some(false)` for JPEG, `None` for anything else.
fn is_image(p: &Path) -> Option<bool> {
    match p.extension()?.to_str()?.to_ascii_lowercase().as_str() {
        "jpg" | "jpeg" => Some(false),
        "png" => Some(true),
        _ => None,
    }
}

fn settled(p: &Path, now: SystemTime) -> bool {
    std::fs::metadata(p)
        .and_then(|m| m.modified())
        .is_ok_and(|t| now.duration_since(t).unwrap_or_default() >= SETTLE)
}

fn read(path: &Path) -> anyhow::Result<Captured> {
    let bytes =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let image = match is_image(path) {
        Some(true) => EncodedImage::Png(bytes),
        _ => EncodedImage::Jpeg(bytes),
    };
    let source = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    Ok(Captured { image, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(s: &mut FolderSource) -> Vec<Captured> {
        let mut out = Vec::new();
        loop {
            match s.next().expect("next") {
                Next::Frame(c) => out.push(c),
                Next::Idle | Next::Finished => return out,
            }
        }
    }

    #[test]
    fn lists_images_in_order_and_repeats() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("b.png"), b"png").expect("write");
        std::fs::write(dir.path().join("a.jpg"), b"jpg").expect("write");
        std::fs::write(dir.path().join("notes.txt"), b"skip").expect("write");
        let mut s = FolderSource::open(dir.path(), 2).expect("open");
        let got: Vec<(EncodedImage, String)> = drain(&mut s)
            .into_iter()
            .map(|c| (c.image, c.source))
            .collect();
        let a = (EncodedImage::Jpeg(b"jpg".to_vec()), "a.jpg".to_string());
        let b = (EncodedImage::Png(b"png".to_vec()), "b.png".to_string());
        assert_eq!(got, vec![a.clone(), b.clone(), a, b]);
    }

    #[test]
    fn an_empty_or_missing_folder_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = FolderSource::open(dir.path(), 1)
            .err()
            .expect("error")
            .to_string();
        assert!(err.starts_with("no .jpg, .jpeg or .png files in"), "{err}");
        let missing = dir.path().join("nope");
        let err = FolderSource::watch(&missing)
            .err()
            .expect("error")
            .to_string();
        assert!(err.starts_with("cannot read image folder"), "{err}");
    }

    #[test]
    fn a_watched_folder_yields_each_new_file_once_after_it_settles() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("0.jpg"), b"first").expect("write");
        let mut s = FolderSource::watch(dir.path()).expect("watch");
        let first = drain(&mut s);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].source, "0.jpg");
        std::fs::write(dir.path().join("1.jpg"), b"second").expect("write");
        // Not taken while it may still be written...
        assert!(drain(&mut s).is_empty());
        std::thread::sleep(SETTLE);
        // ...then taken once.
        let mut got = Vec::new();
        for _ in 0..5 {
            got.extend(drain(&mut s));
        }
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].image, EncodedImage::Jpeg(b"second".to_vec()));
        assert!(!matches!(s.next().expect("next"), Next::Finished));
    }
}
