//! Writing the paths of a run into its [`Target`]: each path's NAR,
//! listing and debug-info entries, then its narinfo, references first.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::sync::Mutex;

use super::pipeline::{Pass, plan};
use super::publication::Publication;
use super::target::Target;
use super::{CacheError, Options};
use crate::cache::write_error;
use crate::format::debuginfo;
use crate::format::nar::listing;
use crate::format::narinfo::{NarInfo, Sig};
use crate::format::store_path::{PathInfo, StorePath};
use crate::support::progress::{Progress, Totals, human_bytes};
use crate::support::schedule;

/// The paths of a run being written into `target`.
pub(super) struct Writer<'a, T> {
    target: &'a T,
    /// Debug-info entries written by this run: entry name -> the store path
    /// it was written for.
    debug_entries: Mutex<HashMap<String, StorePath>>,
}

impl<'a, T: Target> Writer<'a, T> {
    pub(super) fn new(target: &'a T) -> Self {
        Writer {
            target,
            debug_entries: Mutex::new(HashMap::new()),
        }
    }

    /// Writes every path of `closure`; returns the totals.
    ///
    /// NARs are written in the order [`schedule`] picks, but a narinfo is
    /// published only once the narinfos of all its references are: at any
    /// moment, the cache is closed under references.
    pub(super) fn write_paths(
        &self,
        closure: &[PathInfo],
        opts: &Options,
        progress: &Progress,
    ) -> Result<Totals, CacheError> {
        let plan = plan(closure)?;
        progress.begin(plan.len(), plan.iter().map(|(size, _)| size).sum());
        let publication = Publication::new(closure)?;
        let totals = Mutex::new(Totals::default());
        let done = |info: &NarInfo| {
            let file_size = info.file_size.unwrap_or(info.nar_size);
            progress.log(format_args!(
                "cached {}: NAR {} -> {} {}",
                info.store_path.name(),
                human_bytes(info.nar_size),
                info.compression,
                human_bytes(file_size),
            ));
            totals.lock().unwrap().add(info.nar_size, file_size);
        };
        let threshold = opts.compression.multithread_threshold();
        schedule::run(
            &plan,
            |(size, _)| *size,
            threshold,
            opts.jobs,
            |&(nar_size, path), threads| {
                let pass = Pass {
                    path,
                    nar_size,
                    opts,
                    threads,
                    progress,
                };
                let info = self.write_path(&pass)?;
                // Counted now, with its bytes; its line comes with its narinfo.
                progress.path_done();
                publication.ready(info, |info| self.target.publish(info, &done))
            },
        )?;
        self.target.finish(&done)?;
        Ok(totals.into_inner().unwrap())
    }

    /// Writes the NAR, listing and debug-info entries of a path, in that
    /// order (durable once the narinfo is committed); returns its narinfo,
    /// still to be published.
    fn write_path(&self, pass: &Pass) -> Result<NarInfo, CacheError> {
        let (info, listing) = self.write_nar(pass)?;
        if let Some(listing) = listing {
            let hash_part = pass.path.path.hash_part();
            if pass.opts.write_nar_listing {
                let ls = self.target.cache().listing_path(hash_part);
                self.target
                    .write_entry(&ls, &listing.to_ls_json())
                    .map_err(write_error(&ls))?;
            }
            if pass.opts.index_debug_info {
                self.index_debug_info(&pass.path.path, &info.url, &listing)?;
            }
        }
        Ok(info)
    }

    /// Adds a `debuginfo/` entry for each debug file in `listing`.
    ///
    /// An entry that was there before this run is kept, as Nix keeps it.
    /// Between paths of this run that hold the same build ID, the smallest
    /// store path wins, whatever order the workers reach them in, so that
    /// the cache's bytes do not depend on the number of cores.
    fn index_debug_info(
        &self,
        path: &StorePath,
        nar_url: &str,
        listing: &listing::Node,
    ) -> Result<(), CacheError> {
        let files = debuginfo::debug_files(listing);
        if files.is_empty() {
            return Ok(());
        }
        let dir = self.target.cache().debuginfo_dir();
        let mut written = self.debug_entries.lock().unwrap();
        for file in files {
            let dest = dir.join(&file.file_name);
            let entry = file.index_entry(nar_url);
            match written.get(&file.file_name) {
                Some(by) if by <= path => continue,
                Some(_) => self
                    .target
                    .write_entry(&dest, entry.as_bytes())
                    .map_err(write_error(&dest))?,
                None => {
                    let created = self.target.create_entry(&dest, entry.as_bytes());
                    if !created.map_err(write_error(&dest))? {
                        continue;
                    }
                }
            }
            written.insert(file.file_name, path.clone());
        }
        Ok(())
    }

    /// Writes `nar/<FileHash>.nar<ext>` for the path; returns its narinfo
    /// and, when a listing or debug-info index is wanted, its listing.
    fn write_nar(&self, pass: &Pass) -> Result<(NarInfo, Option<listing::Node>), CacheError> {
        let cache = self.target.cache();
        let path = pass.path;
        let file = if self.target.in_memory(pass.nar_size) {
            let (bytes, file) = pass.compress_and_hash(Vec::new(), &cache.nar_dir())?;
            pass.check(&file.nar)?;
            let dest = cache.file(&file.url(pass.opts.compression));
            // Two paths with the same contents have the same file: the
            // first one writes it.
            match File::create_new(&dest).and_then(|mut f| f.write_all(&bytes)) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                    return Err(CacheError::WriteNar {
                        path: path.path.clone(),
                        file: dest,
                        source: e,
                    });
                }
                _ => {}
            }
            file
        } else {
            let tmp = self
                .target
                .temp()
                .next(&cache.nar_dir().join(path.path.hash_part()));
            let sink = File::create(&tmp).map_err(write_error(&tmp))?;
            let checked = pass
                .compress_and_hash(sink, &tmp)
                .and_then(|(_, file)| pass.check(&file.nar).map(|()| file));
            let file = match checked {
                Ok(file) => file,
                Err(e) => {
                    let _ = fs::remove_file(&tmp);
                    return Err(e);
                }
            };
            let dest = cache.file(&file.url(pass.opts.compression));
            self.target.place(&tmp, &dest).map_err(|e| {
                let _ = fs::remove_file(&tmp);
                write_error(&dest)(e)
            })?;
            file
        };
        let info = NarInfo {
            store_path: path.path.clone(),
            nar_hash: file.nar.hash,
            nar_size: file.nar.size,
            references: path.references.clone(),
            url: file.url(pass.opts.compression),
            compression: pass.opts.compression.name().to_owned(),
            file_hash: Some(file.hash),
            file_size: Some(file.size),
            deriver: path.deriver.clone(),
            // What the store holds, carried over as `nix copy` does.
            signatures: path.signatures.iter().cloned().map(Sig::Valid).collect(),
            ca: path.ca.clone(),
        };
        Ok((info, file.nar.listing))
    }
}
