//! `socksmith completions SHELL` and `socksmith man [COMMAND]`: the script really completes
//! in bash, and the pages are valid roff that groff renders without a warning.

use std::path::Path;
use std::process::Command;

use socksmith_testkit::require_tool;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_socksmith"))
}

fn socksmith(args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args(args)
        .output()
        .expect("run socksmith")
}

#[test]
fn bash_completes_commands_and_serve_options() {
    let Some(bash) = require_tool("bash") else {
        return;
    };
    let out = socksmith(&["completions", "bash"]);
    assert!(out.status.success());
    let script = String::from_utf8(out.stdout).expect("UTF-8 script");
    let path =
        std::env::temp_dir().join(format!("socksmith-completion-{}.bash", std::process::id()));
    std::fs::write(&path, &script).expect("write the script");
    // Source it, then ask for completions as bash would on TAB.
    let complete = |words: &str, cword: usize| {
        let program = format!(
            "source {path}; COMP_WORDS=({words}); COMP_CWORD={cword}; \
             COMP_LINE=\"${{COMP_WORDS[*]}}\"; COMP_POINT=${{#COMP_LINE}}; \
             _socksmith socksmith \"${{COMP_WORDS[$COMP_CWORD]}}\" \"${{COMP_WORDS[$COMP_CWORD-1]}}\"; \
             printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            path = path.display()
        );
        let out = Command::new(&bash)
            .args(["--norc", "--noprofile", "-c", &program])
            .output()
            .expect("run bash");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8")
    };
    let commands = complete("socksmith ''", 1);
    for command in ["serve", "connect", "completions", "man"] {
        assert!(
            commands.lines().any(|l| l == command),
            "{command}: {commands}"
        );
    }
    let options = complete("socksmith serve --li", 2);
    assert_eq!(options.trim(), "--listen", "{options}");
    let options = complete("socksmith serve --allow-l", 2);
    let mut found: Vec<&str> = options.lines().collect();
    found.sort_unstable();
    assert_eq!(
        found,
        ["--allow-link-local", "--allow-loopback-targets"],
        "{options}"
    );
    let _ = std::fs::remove_file(&path);
}

#[test]
fn every_shell_gets_a_script() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = socksmith(&["completions", shell]);
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(script.contains("serve"), "{shell}");
        assert!(script.contains("listen"), "{shell}");
    }
    let out = socksmith(&["completions", "tcsh"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("possible values"));
}

#[test]
fn man_pages_render_without_warnings() {
    let Some(groff) = require_tool("groff") else {
        return;
    };
    for (args, title, must_have) in [
        (&["man"][..], "socksmith", "serve"),
        (
            &["man", "serve"],
            "socksmith-serve",
            "--allow-loopback-targets",
        ),
        (&["man", "connect"], "socksmith-connect", "--proxy"),
    ] {
        let out = socksmith(args);
        assert!(out.status.success(), "{args:?}");
        let page = String::from_utf8(out.stdout).expect("UTF-8 roff");
        assert!(page.contains(&format!(".TH {title} 1")), "{args:?}: {page}");
        let mut render = Command::new(&groff)
            // -P-cbou: plain text, no escape sequences or overstrikes.
            .args(["-man", "-Tascii", "-ww", "-P-cbou"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run groff");
        std::io::Write::write_all(&mut render.stdin.take().expect("stdin"), page.as_bytes())
            .expect("write to groff");
        let rendered = render.wait_with_output().expect("groff output");
        assert!(rendered.status.success(), "{args:?}");
        let warnings = String::from_utf8_lossy(&rendered.stderr);
        assert!(warnings.trim().is_empty(), "{args:?}: {warnings}");
        let text = String::from_utf8_lossy(&rendered.stdout);
        assert!(text.contains("NAME"), "{args:?}: {text}");
        assert!(text.contains(title), "{args:?}: {text}");
        assert!(text.contains(must_have), "{args:?}: {must_have} in {text}");
    }
    let out = socksmith(&["man", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no command \"nope\"") && err.contains("serve"),
        "{err}"
    );
}
