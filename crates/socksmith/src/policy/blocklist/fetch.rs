//! Downloading a list over HTTP(S): reqwest on rustls (no OpenSSL), bounded in time and
//! size. Only compiled with the `blocklist-fetch` feature.

use std::time::Duration;

use super::BlocklistError;

/// One HTTP client for all of a set's downloads (connections and TLS sessions reused).
#[derive(Debug)]
pub(super) struct Fetcher {
    client: reqwest::Client,
}

impl Fetcher {
    /// A client that gives up on a download after `timeout`.
    pub(super) fn new(timeout: Duration) -> Result<Fetcher, BlocklistError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(30)))
            .user_agent(concat!("socksmith/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| BlocklistError::HttpClient {
                source: Box::new(source),
            })?;
        Ok(Fetcher { client })
    }

    /// The body at `url`, when the answer is 2xx and at most `limit` bytes.
    /// Refuses, when the set is opened, a URL no request could be sent to (so that a typo is
    /// a configuration error, not a list that silently stays empty).
    pub(super) fn check_url(url: &str) -> Result<(), BlocklistError> {
        let bad = |reason: String| BlocklistError::BadUrl {
            url: super::source::redacted(url),
            reason,
        };
        let parsed = reqwest::Url::parse(url).map_err(|e| bad(e.to_string()))?;
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(bad("no host".to_owned()));
        }
        Ok(())
    }

    pub(super) async fn get(&self, url: &str, limit: usize) -> Result<Vec<u8>, BlocklistError> {
        let failed = |source: reqwest::Error| BlocklistError::Fetch {
            url: super::source::redacted(url),
            source: Box::new(source.without_url()),
        };
        let too_large = || BlocklistError::TooLarge {
            url: super::source::redacted(url),
            limit,
        };
        let mut response = self.client.get(url).send().await.map_err(failed)?;
        let status = response.status();
        if !status.is_success() {
            return Err(BlocklistError::HttpStatus {
                url: super::source::redacted(url),
                status: status.as_u16(),
            });
        }
        let declared = response.content_length().unwrap_or(0);
        if usize::try_from(declared).map_or(true, |declared| declared > limit) {
            return Err(too_large());
        }
        let mut body = Vec::with_capacity(declared as usize);
        while let Some(chunk) = response.chunk().await.map_err(failed)? {
            if body.len() + chunk.len() > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}
