//! Checks for the configuration file (`socksmith serve --config`). Its parser lives in the
//! binary crate, which the fuzz crate cannot depend on, so these targets fuzz the library
//! pieces it is made of: the `[[rules]]` tables and `default` through `toml` into
//! `RuleSet::from_config`, and the value parsers the file's strings go through (`IpNet` for
//! `deny`/`from`/`to`, `Proxy` for `upstream`, `Rate` for `rate_per_user`).

use serde::Deserialize;
use socksmith::client::{Proxy, UserInfo};
use socksmith::policy::{Action, IpNet, Rate, RuleConfig, RuleSet};

/// The part of the file the rules are read from, typed as the CLI types it (other keys are
/// ignored here; the CLI refuses unknown ones).
#[derive(Debug, Deserialize)]
struct RulesPart {
    default: Option<Action>,
    rules: Option<Vec<RuleConfig>>,
}

/// A TOML document into `[[rules]]` and `default`, then into a `RuleSet`: the set has one
/// rule per table, conversion is deterministic, and a refusal names the first table at fault
/// (every table before it converts).
pub fn check_rules(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(part) = toml::from_str::<RulesPart>(text) else {
        return;
    };
    let rules = part.rules.unwrap_or_default();
    match RuleSet::from_config(part.default, &rules) {
        Ok(set) => {
            assert_eq!(set.len(), rules.len());
            assert_eq!(RuleSet::from_config(part.default, &rules), Ok(set));
        }
        Err(e) => {
            assert!(
                (1..=rules.len()).contains(&e.position),
                "{e} with {} rules",
                rules.len()
            );
            assert_eq!(e.name, rules[e.position - 1].name);
            let before = RuleSet::from_config(part.default, &rules[..e.position - 1]);
            assert!(before.is_ok(), "{e}, but an earlier rule fails: {before:?}");
        }
    }
}

/// One string through each value parser of the file: what parses prints back to a string
/// that parses to the same value, and a proxy URL's password never shows in its printed
/// form.
pub fn check_values(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(net) = text.parse::<IpNet>() {
        assert_eq!(net.to_string().parse::<IpNet>(), Ok(net), "{text:?}");
    }
    if let Ok(rate) = text.parse::<Rate>() {
        assert!(rate.get() >= 1);
        assert_eq!(rate.to_string().parse::<Rate>(), Ok(rate), "{text:?}");
    }
    if let Ok(proxy) = text.parse::<Proxy>() {
        let printed = proxy.to_string();
        match proxy
            .user_info()
            .and_then(|info| Some((info.user(), info.password()?)))
        {
            None => assert_eq!(printed.parse::<Proxy>(), Ok(proxy), "{text:?}"),
            Some((user, _)) => {
                // Printed the same whatever the password: it does not show.
                let other = proxy.clone().with_user_info(UserInfo::new(user, "x"));
                assert_eq!(other.to_string(), printed);
                assert!(printed.contains(":***@"), "{printed}");
            }
        }
    }
}
