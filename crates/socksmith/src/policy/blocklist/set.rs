//! The blocklist a running server reads, and the task that keeps it fresh.
//!
//! Sessions read the current [`Blocklist`] through an [`ArcSwap`]: a lookup takes no lock and
//! never waits for a reload. A reload builds each new list aside (on a blocking thread: a
//! million lines take about a second) and swaps it in whole; a list that fails to load or
//! fetch leaves the one in use in place, with a `warn!` line saying why.
//!
//! URL sources are cached: after each good fetch the downloaded text is written (atomically)
//! to the cache directory, and [`BlocklistSet::open`] loads that copy first, so a restart
//! without network blocks what it blocked before.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use super::{Blocklist, BlocklistError, DomainList, ListName, ListSource};
use crate::policy::blocklist::table::DomainTable;

/// How often lists are reloaded unless configured: once a day, as list publishers expect.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(24 * 60 * 60);

/// The largest download accepted for one list. The biggest popular hosts files are around
/// 30 MiB; more is a misconfigured URL.
pub const MAX_DOWNLOAD_BYTES: usize = 128 * 1024 * 1024;

/// How long one download may take, unless configured.
const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(120);

/// After a failed reload, the next try comes after at most this long, not a whole refresh
/// interval later.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(60 * 60);

/// Which lists to load, where to cache downloads, how often to reload.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BlocklistConfig {
    /// The lists, in the order a match is reported.
    pub sources: Vec<ListSource>,
    /// Where URL lists' last good copies are kept; `None` keeps none (a restart without
    /// network then starts with those lists empty).
    pub cache_dir: Option<PathBuf>,
    /// How often every list is reloaded ([`DEFAULT_REFRESH`]).
    pub refresh: Duration,
    /// How long one download may take (connection, TLS and body).
    pub fetch_timeout: Duration,
}

impl BlocklistConfig {
    /// The lists `sources`, no cache, reloaded every [`DEFAULT_REFRESH`].
    pub fn new(sources: Vec<ListSource>) -> Self {
        BlocklistConfig {
            sources,
            cache_dir: None,
            refresh: DEFAULT_REFRESH,
            fetch_timeout: DEFAULT_FETCH_TIMEOUT,
        }
    }

    /// The usual cache directory for downloaded lists: under systemd's `CacheDirectory=`
    /// (`$CACHE_DIRECTORY/blocklists`, the first when it names several), else the user's,
    /// `$XDG_CACHE_HOME/socksmith/blocklists` or `$HOME/.cache/socksmith/blocklists`; `None`
    /// when none of these variables is set (a service without a home should be given a
    /// directory such as `/var/cache/socksmith`).
    pub fn default_cache_dir() -> Option<PathBuf> {
        cache_dir_from(|name| std::env::var_os(name))
    }

    /// Keeps URL lists' last good copies in `dir` (created when missing).
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }

    /// Reloads every list this often.
    pub fn refresh(mut self, every: Duration) -> Self {
        self.refresh = every;
        self
    }

    /// Gives up on one download after this long.
    pub fn fetch_timeout(mut self, timeout: Duration) -> Self {
        self.fetch_timeout = timeout;
        self
    }
}

/// One list's state, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListStatus {
    /// The list.
    pub list: ListName,
    /// Names in the copy in use (0 until a URL list is first fetched, without a cache).
    pub names: usize,
    /// Lines skipped when that copy was read.
    pub skipped_lines: usize,
    /// Requests this list blocked since the set was opened (`socksmith_blocked_total`).
    pub blocked: u64,
}

/// The lists in use, swapped whole on reload, read without locks.
#[derive(Debug)]
pub struct BlocklistSet {
    config: BlocklistConfig,
    /// One list per source, in source order.
    current: ArcSwap<Blocklist>,
    /// Blocks per source, across reloads.
    blocked: Vec<AtomicU64>,
    #[cfg(feature = "blocklist-fetch")]
    fetcher: super::fetch::Fetcher,
}

impl BlocklistSet {
    /// Loads every file source, and every URL source's cached copy when there is one.
    /// URLs are first fetched by [`BlocklistSet::refresh`] or [`BlocklistSet::run_refresh`].
    ///
    /// This reads files synchronously (about a second for a million names): call it at
    /// start-up or from a blocking thread. A file that cannot be read, or that holds no
    /// name at all, is an error; a missing or unreadable cached copy only starts that URL's
    /// list empty (logged).
    pub fn open(config: BlocklistConfig) -> Result<BlocklistSet, BlocklistError> {
        #[cfg(not(feature = "blocklist-fetch"))]
        if let Some(ListSource::Url(url)) = config
            .sources
            .iter()
            .find(|s| matches!(s, ListSource::Url(_)))
        {
            return Err(BlocklistError::FetchUnsupported {
                url: super::source::redacted(url),
            });
        }
        #[cfg(feature = "blocklist-fetch")]
        for source in &config.sources {
            if let ListSource::Url(url) = source {
                super::fetch::Fetcher::check_url(url)?;
            }
        }
        let mut lists = Vec::with_capacity(config.sources.len());
        for source in &config.sources {
            let list = match source {
                ListSource::File(path) => load_file(source.name(), path)?,
                ListSource::Url(_) => load_cached(source, config.cache_dir.as_deref()),
            };
            lists.push(Arc::new(list));
        }
        Ok(BlocklistSet {
            #[cfg(feature = "blocklist-fetch")]
            fetcher: super::fetch::Fetcher::new(config.fetch_timeout)?,
            blocked: config.sources.iter().map(|_| AtomicU64::new(0)).collect(),
            current: ArcSwap::from_pointee(Blocklist::new(lists)),
            config,
        })
    }

    /// The configuration it was opened with.
    pub fn config(&self) -> &BlocklistConfig {
        &self.config
    }

    /// The list that blocks `host`, if any (see [`Blocklist::matches`]), counting the block
    /// against that list. Lock-free; a reload in progress does not delay it.
    pub fn check(&self, host: impl AsRef<[u8]>) -> Option<ListName> {
        let current = self.current.load();
        let index = current.matching_index(host.as_ref())?;
        if let Some(counter) = self.blocked.get(index) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        current.lists().get(index).map(|list| list.name().clone())
    }

    /// The blocklist in use now (it stays valid however long it is held).
    pub fn blocklist(&self) -> Arc<Blocklist> {
        self.current.load_full()
    }

    /// Each list's state, in source order.
    pub fn status(&self) -> Vec<ListStatus> {
        let current = self.current.load();
        current
            .lists()
            .iter()
            .zip(&self.blocked)
            .map(|(list, blocked)| ListStatus {
                list: list.name().clone(),
                names: list.len(),
                skipped_lines: list.report().skipped,
                blocked: blocked.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Reloads every source now: files are read again, URLs fetched (and cached). Each list
    /// that loads is swapped in; each that fails keeps the copy in use. Returns, per
    /// source, the names loaded or the error (both are logged too).
    pub async fn refresh(&self) -> Vec<(ListName, Result<usize, BlocklistError>)> {
        self.refresh_where(|_| true).await
    }

    /// Fetches the URL sources now (see [`BlocklistSet::refresh`]); files are left alone.
    pub async fn refresh_urls(&self) -> Vec<(ListName, Result<usize, BlocklistError>)> {
        self.refresh_where(|source| matches!(source, ListSource::Url(_)))
            .await
    }

    /// Keeps the lists fresh until `shutdown` resolves: fetches the URL lists at once, then
    /// reloads every list each [`BlocklistConfig::refresh`], or within the hour after a
    /// failure.
    pub async fn run_refresh(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut outcome = tokio::select! {
            () = &mut shutdown => return,
            outcome = self.refresh_urls() => outcome,
        };
        loop {
            let failed = outcome.iter().any(|(_, result)| result.is_err());
            let wait = if failed {
                self.config.refresh.min(RETRY_AFTER_FAILURE)
            } else {
                self.config.refresh
            };
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(wait) => {}
            }
            outcome = tokio::select! {
                () = &mut shutdown => return,
                outcome = self.refresh() => outcome,
            };
        }
    }

    async fn refresh_where(
        &self,
        wanted: impl Fn(&ListSource) -> bool,
    ) -> Vec<(ListName, Result<usize, BlocklistError>)> {
        let mut outcome = Vec::new();
        for (index, source) in self.config.sources.iter().enumerate() {
            if !wanted(source) {
                continue;
            }
            let name = source.name();
            let started = Instant::now();
            let in_use = self.names_in_use(index);
            let result = self.reload(source, in_use).await;
            match result {
                Ok(list) => {
                    let names = list.len();
                    log_loaded(&list, started, "reloaded");
                    self.install(index, Arc::new(list));
                    outcome.push((name, Ok(names)));
                }
                Err(error) => {
                    tracing::warn!(
                        list = %name,
                        %error,
                        names_in_use = in_use,
                        "blocklist reload failed; keeping the copy in use"
                    );
                    outcome.push((name, Err(error)));
                }
            }
        }
        outcome
    }

    /// Names in the copy of list `index` in use.
    fn names_in_use(&self, index: usize) -> usize {
        self.current
            .load()
            .lists()
            .get(index)
            .map_or(0, |list| list.len())
    }

    /// Loads one source afresh, off the async threads. A list that comes back without a
    /// name while the copy in use (`in_use` names) has some is refused
    /// ([`BlocklistError::Emptied`]): an empty download or a file caught while it is being
    /// rewritten would otherwise unblock everything, and for a URL, overwrite the cache.
    async fn reload(
        &self,
        source: &ListSource,
        in_use: usize,
    ) -> Result<DomainList, BlocklistError> {
        let name = source.name();
        let not_emptied = move |list: DomainList| {
            if list.is_empty() && in_use > 0 {
                return Err(BlocklistError::Emptied {
                    list: list.name().clone(),
                    in_use,
                });
            }
            Ok(list)
        };
        match source {
            ListSource::File(path) => {
                let path = path.clone();
                blocking(name.clone(), move || {
                    load_file(name, &path).and_then(not_emptied)
                })
                .await
            }
            ListSource::Url(url) => {
                let text = self.fetch(url).await?;
                let cache = self
                    .config
                    .cache_dir
                    .as_deref()
                    .and_then(|dir| source.cache_file(dir));
                blocking(name.clone(), move || {
                    let list = not_emptied(DomainList::parse(name.clone(), &text)?)?;
                    // Only a copy that parsed replaces the cached one.
                    if let Some(cache) = cache {
                        if let Err(error) = write_atomically(&cache, &text) {
                            tracing::warn!(
                                list = %name,
                                cache = %cache.display(),
                                %error,
                                "cannot write the blocklist cache; a restart without network \
                                 will start this list from the previous copy"
                            );
                        }
                    }
                    Ok(list)
                })
                .await
            }
        }
    }

    #[cfg(feature = "blocklist-fetch")]
    async fn fetch(&self, url: &str) -> Result<Vec<u8>, BlocklistError> {
        self.fetcher.get(url, MAX_DOWNLOAD_BYTES).await
    }

    #[cfg(not(feature = "blocklist-fetch"))]
    async fn fetch(&self, url: &str) -> Result<Vec<u8>, BlocklistError> {
        Err(BlocklistError::FetchUnsupported {
            url: super::source::redacted(url),
        })
    }

    /// Puts `list` in place of source `index`'s list.
    fn install(&self, index: usize, list: Arc<DomainList>) {
        self.current.rcu(|current| {
            let mut lists = current.lists().to_vec();
            if let Some(slot) = lists.get_mut(index) {
                *slot = Arc::clone(&list);
            }
            Blocklist::new(lists)
        });
    }
}

/// Runs `load` on a blocking thread.
async fn blocking(
    list: ListName,
    load: impl FnOnce() -> Result<DomainList, BlocklistError> + Send + 'static,
) -> Result<DomainList, BlocklistError> {
    match tokio::task::spawn_blocking(load).await {
        Ok(result) => result,
        Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
        Err(_) => Err(BlocklistError::Interrupted { list }),
    }
}

/// Reads and parses a list file.
fn load_file(name: ListName, path: &Path) -> Result<DomainList, BlocklistError> {
    let started = Instant::now();
    let text = std::fs::read(path).map_err(|source| BlocklistError::Read {
        path: path.to_owned(),
        source,
    })?;
    let list = DomainList::parse(name, &text)?;
    log_loaded(&list, started, "loaded");
    Ok(list)
}

/// A URL list's cached copy, or an empty list when there is none to use.
fn load_cached(source: &ListSource, cache_dir: Option<&Path>) -> DomainList {
    let name = source.name();
    let Some(path) = cache_dir.and_then(|dir| source.cache_file(dir)) else {
        return DomainList::empty(name);
    };
    match load_file(name.clone(), &path) {
        Ok(list) => list,
        Err(BlocklistError::Read { source: error, .. })
            if error.kind() == std::io::ErrorKind::NotFound =>
        {
            tracing::info!(list = %name, "no cached copy of this blocklist yet; it blocks nothing until fetched");
            DomainList::empty(name)
        }
        Err(error) => {
            tracing::warn!(list = %name, cache = %path.display(), %error, "cached blocklist unusable; it blocks nothing until fetched");
            DomainList::empty(name)
        }
    }
}

fn log_loaded(list: &DomainList, started: Instant, what: &str) {
    let report = list.report();
    tracing::info!(
        list = %list.name(),
        names = report.names,
        duplicates = report.duplicates,
        skipped_lines = report.skipped,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "blocklist {what}"
    );
    for error in &report.first_errors {
        tracing::debug!(%error, "blocklist line skipped");
    }
    if let Some(first) = report.first_errors.first() {
        tracing::warn!(
            list = %list.name(),
            skipped_lines = report.skipped,
            first = %first,
            "blocklist lines skipped (see debug logs for more)"
        );
    }
}

/// Writes `contents` to `path` through a temporary file and a rename, so a crash never
/// leaves half a list behind. Creates the directory when missing.
fn write_atomically(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    std::fs::write(&temporary, contents)?;
    std::fs::rename(&temporary, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&temporary);
    })
}

impl DomainList {
    /// A list holding nothing yet (a URL not fetched).
    pub(crate) fn empty(name: ListName) -> DomainList {
        DomainList {
            name,
            table: DomainTable::default(),
            report: super::ParseReport::default(),
        }
    }
}

/// [`BlocklistConfig::default_cache_dir`] with the environment read through `var`.
fn cache_dir_from(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> Option<PathBuf> {
    let non_empty = |name: &str| var(name).filter(|value| !value.is_empty());
    if let Some(service) = non_empty("CACHE_DIRECTORY") {
        let first = std::env::split_paths(&service).next()?;
        return Some(first.join("blocklists"));
    }
    let base = non_empty("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| non_empty("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    Some(base.join("socksmith").join("blocklists"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_cache_is_systemds_then_the_users() {
        let dir = |pairs: &[(&str, &str)]| {
            cache_dir_from(|name| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            })
        };
        assert_eq!(
            dir(&[
                ("CACHE_DIRECTORY", "/var/cache/socksmith:/var/cache/other"),
                ("HOME", "/h")
            ]),
            Some(PathBuf::from("/var/cache/socksmith/blocklists"))
        );
        assert_eq!(
            dir(&[("XDG_CACHE_HOME", "/x"), ("HOME", "/h")]),
            Some(PathBuf::from("/x/socksmith/blocklists"))
        );
        assert_eq!(
            dir(&[("XDG_CACHE_HOME", ""), ("HOME", "/h")]),
            Some(PathBuf::from("/h/.cache/socksmith/blocklists"))
        );
        assert_eq!(dir(&[]), None);
    }
}
