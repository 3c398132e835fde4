//! `mkBinaryCache` as a drop-in for nixpkgs' function: what nixpkgs users do
//! with it keeps working. Its result takes `overrideAttrs` as a
//! `stdenv.mkDerivation` result does, and callPackage's `.override` with it;
//! the overlay leaves nixpkgs' own function where the program cannot run;
//! `rootPaths` takes every kind of root nixpkgs' function takes; the result
//! has the attributes of a `stdenv.mkDerivation` result (`outputs`, `meta`
//! filled in, `inputDerivation`), the function the arguments
//! `lib.functionArgs` reports, and what cannot mean anything here (`old.
//! nativeBuildInputs`, `old.buildCommand`) is an error that says why.
//!
//! Where nixpkgs' shape matters, the result is compared with nixpkgs' own
//! function in the stand-in (tests/fixtures/fake-nixpkgs), whose `lib` and
//! `stdenv.mkDerivation` follow nixpkgs'.
//!
//! Evaluation tests use `nix-instantiate --eval` (any directory stands for
//! the builder there); build tests use real Nix with the sandbox on and the
//! caches of tests/fixtures/drop-in.nix.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::common::*;

/// The value of the Nix expression `expr`, evaluated in the repository with
/// `mkBinaryCache` (the builder stood for by a directory, since nothing is
/// built) and `root`, a store path made at evaluation, in scope.
fn eval(expr: &str) -> Value {
    let out = run(eval_command(expr).args(["--eval", "--strict", "--json"]));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The first `error:` line of evaluating `expr` (as [`eval`] does), which
/// must fail.
fn eval_error(expr: &str) -> String {
    let stderr = run_failing(eval_command(expr).args(["--eval", "--strict"]));
    stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line in: {stderr}"))
        .to_string()
}

/// `nix-instantiate -E expr` with what [`eval`] puts in scope: writes the
/// derivation `expr` gives, or evaluates it with `--eval`.
fn eval_command(expr: &str) -> std::process::Command {
    let expr = format!(
        r#"
        let
          mkBinaryCache = import ./nix/mk-binary-cache.nix {{ mk-binary-cache = {builder}; }};
          root = builtins.toFile "root" "a root\n";
          cache = mkBinaryCache {{ rootPaths = [ root ]; }};
        in
        {expr}
        "#,
        builder = nix_path(busybox_dir()),
    );
    let mut cmd = nix_cmd("nix-instantiate");
    cmd.current_dir(repo()).args(["-E", &expr]);
    cmd
}

/// The value of `expr` with `pkgs` in scope: the stand-in for nixpkgs
/// (tests/fixtures/fake-nixpkgs) with this repository's overlay, made with
/// `args` (such as `localSystem = "x86_64-darwin";`), and `plain`, the same
/// package set without the overlay.
fn eval_with_overlay(args: &str, expr: &str) -> Value {
    eval(&format!(
        r#"
        let
          fake = import ./tests/fixtures/fake-nixpkgs;
          pkgs = fake {{ {args} overlays = [ (import ./nix/overlay.nix) ]; }};
          plain = fake {{ {args} }};
        in
        {expr}
        "#
    ))
}

/// Builds each of `attrs` of tests/fixtures/drop-in.nix; gives the output
/// paths, in their order.
fn build_drop_in(attrs: &[&str]) -> Vec<String> {
    let mut args = input_args();
    for attr in attrs {
        args.extend(["-A".to_string(), attr.to_string()]);
    }
    nix_build(&fixture_file("drop-in.nix"), &args)
}

/// Builds the cache `attr` of tests/fixtures/drop-in.nix.
fn build_drop_in_cache(attr: &str) -> PathBuf {
    let out = build_drop_in(&[attr]);
    assert_eq!(out.len(), 1, "expected one output, got {out:?}");
    PathBuf::from(&out[0])
}

/// The store paths of `list`, a Nix list of attributes of `d`, the
/// attributes of tests/fixtures/drop-in.nix, evaluated without building.
fn drop_in_paths(list: &str) -> Vec<String> {
    let v = eval(&format!(
        "let d = import ./tests/fixtures/drop-in.nix {{ busyboxDir = {bb}; toolDir = {bb}; }}; \
         in map toString {list}",
        bb = nix_path(busybox_dir()),
    ));
    serde_json::from_value(v).unwrap()
}

/// The hash parts of the closure of `paths`, sorted, as
/// [`narinfo_hash_parts`] gives a cache's.
fn closure_hash_parts(paths: &[String]) -> Vec<String> {
    let out = run(nix_cmd("nix-store").arg("-qR").args(paths));
    let mut parts: Vec<String> = out.lines().map(|p| hash_part(p).to_string()).collect();
    parts.sort();
    parts
}

/// The lines of the cache's `store-paths`.
fn store_paths_file(cache: &Path) -> Vec<String> {
    fs::read_to_string(cache.join("store-paths"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

// overrideAttrs and override

#[test]
fn override_attrs_gives_the_derivation_a_direct_call_with_those_arguments_gives() {
    // The same .drv as a direct call: overriding adds no input, no stdenv,
    // and changes nothing but what it names, in each form mkDerivation's
    // overrideAttrs accepts.
    let v = eval(
        r#"
        let
          direct = (mkBinaryCache { rootPaths = [ root ]; compression = "xz"; }).drvPath;
        in [
          ((cache.overrideAttrs (old: { compression = "xz"; })).drvPath == direct)
          ((cache.overrideAttrs (final: prev: { compression = "xz"; })).drvPath == direct)
          ((cache.overrideAttrs { compression = "xz"; }).drvPath == direct)
          ((cache.overrideAttrs { }).drvPath == cache.drvPath)
          (cache.drvPath != direct)
        ]
        "#,
    );
    assert_eq!(v, json!([true, true, true, true, true]));
}

#[test]
fn overridden_cache_has_no_input_but_the_builder_and_the_roots() {
    let drv = run(&mut eval_command(
        r#"cache.overrideAttrs { compression = "xz"; }"#,
    ));
    let refs = run(nix_cmd("nix-store")
        .args(["--query", "--references"])
        .arg(drv.trim_end()));
    let names: BTreeSet<&str> = refs.lines().map(|p| &basename(p)[33..]).collect();
    // busybox is the directory standing for the builder here.
    assert_eq!(names, BTreeSet::from(["busybox", "root"]));
}

#[test]
fn override_attrs_old_holds_the_arguments_with_their_defaults() {
    let v = eval(
        r#"
        let
          seen = (cache.overrideAttrs (old: {
            passthru.old = {
              inherit (old) name compression compressionLevel priority wantMassQuery
                writeNarListing indexDebugInfo preferLocalBuild outputs passthru meta;
              # Nix's default, as in nixpkgs' function: not set.
              setsAllowSubstitutes = old ? allowSubstitutes;
              rootPaths = map toString old.rootPaths;
            };
          })).old;
        in seen // { rootsAreTheRoot = seen.rootPaths == [ "${root}" ]; rootPaths = null; }
        "#,
    );
    assert_eq!(
        v,
        json!({
            "name": "binary-cache",
            "compression": "zstd",
            "compressionLevel": null,
            "priority": null,
            "wantMassQuery": null,
            "writeNarListing": false,
            "indexDebugInfo": false,
            "preferLocalBuild": true,
            "outputs": ["out"],
            "setsAllowSubstitutes": false,
            "passthru": {},
            "meta": {},
            "rootPaths": null,
            "rootsAreTheRoot": true,
        })
    );
}

#[test]
fn repeated_override_attrs_compose() {
    let v = eval(
        r#"
        let
          twice = (cache.overrideAttrs (old: { compression = "xz"; }))
            .overrideAttrs (old: { name = "${old.name}-${old.compression}"; });
          # `final` sees what later overrides set.
          late = (cache.overrideAttrs (final: prev: { name = "cache-priority-${toString final.priority}"; }))
            .overrideAttrs { priority = 7; };
          self = cache.overrideAttrs (final: prev: { passthru.selfName = final.finalPackage.name; });
        in [ twice.name twice.compression late.name late.priority self.selfName ]
        "#,
    );
    assert_eq!(
        v,
        json!([
            "binary-cache-xz",
            "xz",
            "cache-priority-7",
            7,
            "binary-cache"
        ])
    );
}

#[test]
fn passthru_and_meta_survive_overrides_and_can_be_overridden() {
    let v = eval(
        r#"
        let
          described = mkBinaryCache {
            rootPaths = [ root ];
            passthru.tests.cache = "a test";
            meta.description = "a cache";
          };
          xz = described.overrideAttrs { compression = "xz"; };
          more = xz.overrideAttrs (old: {
            passthru = old.passthru // { extra = 1; };
            meta = old.meta // { license = "mit"; };
          });
          # The caller's part of `meta`; mkDerivation's is filled in around it.
          given = meta: builtins.intersectAttrs { description = 0; license = 0; } meta;
        in [ xz.tests (given xz.meta) more.tests more.extra more.passthru.extra (given more.meta) ]
        "#,
    );
    assert_eq!(
        v,
        json!([
            {"cache": "a test"},
            {"description": "a cache"},
            {"cache": "a test"},
            1,
            1,
            {"description": "a cache", "license": "mit"}
        ])
    );
}

#[test]
fn invalid_values_given_by_override_attrs_fail_as_a_direct_call_does() {
    for (attr, value) in [
        ("compression", r#""gzip""#),
        ("compressionLevel", r#""9""#),
        ("priority", r#""high""#),
        ("wantMassQuery", "1"),
        ("writeNarListing", "null"),
        ("rootPaths", "root"),
        (
            "rootPaths",
            r#"[ "/nix/store/00000000000000000000000000000000-x" ]"#,
        ),
    ] {
        let direct = eval_error(&format!(
            "(mkBinaryCache ({{ rootPaths = [ root ]; }} // {{ {attr} = {value}; }})).drvPath"
        ));
        let overridden = eval_error(&format!(
            "(cache.overrideAttrs (old: {{ {attr} = {value}; }})).drvPath"
        ));
        assert!(direct.contains("mkBinaryCache: "), "{direct}");
        assert_eq!(overridden, direct, "{attr} = {value}");
    }
}

#[test]
fn call_package_override_keeps_override_attrs_and_the_other_way_round() {
    // callPackage's `.override` re-calls the caller's function with other
    // packages; the overrideAttrs made before it still applies.
    let v = eval_with_overlay(
        "",
        r#"
        let
          other = pkgs.writeText "other" "another root\n";
          cache = pkgs.callPackage ({ mkBinaryCache, hello }: mkBinaryCache { rootPaths = [ hello ]; }) { };
          xz = cache.overrideAttrs (old: { compression = "xz"; });
          both = xz.override { hello = other; };
          expected = pkgs.mkBinaryCache { rootPaths = [ other ]; compression = "xz"; };
        in [
          both.compression
          (both.drvPath == expected.drvPath)
          ((both.overrideAttrs { compression = "none"; }).compression)
        ]
        "#,
    );
    assert_eq!(v, json!(["xz", true, "none"]));
}

#[test]
fn function_override_takes_the_program_and_ignores_nixpkgs_own_dependencies() {
    // `pkgs.mkBinaryCache.override { … }` as written for nixpkgs' function,
    // whose dependencies (stdenv, python3, nix, …) have no role here.
    let v = eval_with_overlay(
        "",
        r#"
        let
          other = pkgs.writeText "another-program" "";
          cache = f: f { rootPaths = [ pkgs.hello ]; };
          withOther = cache (pkgs.mkBinaryCache.override { mk-binary-cache = other; });
          nixpkgsDeps = pkgs.mkBinaryCache.override {
            stdenv = null; coreutils = null; jq = null; python3 = null; nix = null; xz = null; zstd = null;
          };
        in [
          (withOther.builder == "${other}/bin/mk-binary-cache")
          ((cache nixpkgsDeps).drvPath == (cache pkgs.mkBinaryCache).drvPath)
        ]
        "#,
    );
    assert_eq!(v, json!([true, true]));
}

#[test]
fn override_attrs_compression_gives_a_cache_nix_reads_with_that_compression() {
    let cache = build_drop_in_cache("overridden");
    let roots = drop_in_paths("[ d.note d.library.out ]");
    assert_eq!(store_paths_file(&cache), roots);
    assert_eq!(narinfo_hash_parts(&cache), closure_hash_parts(&roots));
    for root in &roots {
        let info = narinfo_of(&cache, root);
        assert_eq!(info["Compression"], "xz", "{root}");
        assert!(info["URL"].ends_with(".nar.xz"), "{root}: {}", info["URL"]);
    }
    let store = tempdir();
    copy_out_of_cache(&cache, store.path(), &roots);
    assert_eq!(
        fs::read_to_string(in_store(store.path(), &roots[0])).unwrap(),
        "written by builtins.toFile\n"
    );
}

// Platforms

#[test]
fn overlay_keeps_nixpkgs_mk_binary_cache_where_the_build_platform_is_not_linux() {
    // Natively on macOS, and when building on macOS for Linux: the builder
    // would have to run on macOS.
    for args in [
        r#"localSystem = "x86_64-darwin";"#,
        r#"localSystem = "aarch64-darwin"; crossSystem = "x86_64-linux";"#,
    ] {
        let v = eval_with_overlay(
            args,
            r#"
            let call = set: (set.mkBinaryCache { rootPaths = [ set.hello ]; }).drvPath;
            in call pkgs == call plain
            "#,
        );
        assert_eq!(v, json!(true), "{args}");
    }
}

#[test]
fn overlay_replaces_mk_binary_cache_where_the_builder_runs() {
    // Natively on Linux, and when building on Linux for macOS: the builder
    // runs on the build platform.
    for args in ["", r#"crossSystem = "aarch64-darwin";"#] {
        let v = eval_with_overlay(
            args,
            r#"
            let cache = pkgs.mkBinaryCache { rootPaths = [ pkgs.hello ]; };
            in [
              (cache.drvPath != (plain.mkBinaryCache { rootPaths = [ pkgs.hello ]; }).drvPath)
              (builtins.baseNameOf cache.builder)
            ]
            "#,
        );
        assert_eq!(v, json!([true, "mk-binary-cache"]), "{args}");
    }
}

#[test]
fn sign_binary_cache_says_why_where_the_host_platform_is_not_linux() {
    for (args, system) in [
        (r#"localSystem = "x86_64-darwin";"#, "x86_64-darwin"),
        (r#"crossSystem = "aarch64-darwin";"#, "aarch64-darwin"),
    ] {
        let stderr = run_failing(eval_command(&format!(
            r#"
            let pkgs = import ./tests/fixtures/fake-nixpkgs {{ {args} overlays = [ (import ./nix/overlay.nix) ]; }};
            in pkgs.signBinaryCache
            "#
        )).arg("--eval"));
        assert!(
            stderr.contains(&format!(
                "signBinaryCache: mk-binary-cache does not run on {system} (its meta.platforms: "
            )),
            "{args}: {stderr}"
        );
    }
}

#[test]
fn sign_binary_cache_is_there_where_the_host_platform_is_linux() {
    // Built on macOS, run on Linux: the script runs the program on Linux.
    let v = eval_with_overlay(
        r#"localSystem = "aarch64-darwin"; crossSystem = "x86_64-linux";"#,
        r#"builtins.isString (pkgs.signBinaryCache { cache = pkgs.hello; }).drvPath"#,
    );
    assert_eq!(v, json!(true));
}

// Roots of every kind

#[test]
fn both_outputs_of_a_multi_output_derivation_are_roots() {
    let cache = build_drop_in_cache("multiOutput");
    let outputs = build_drop_in(&["library.out", "library.dev"]);
    assert_eq!(store_paths_file(&cache), outputs);
    assert_eq!(narinfo_hash_parts(&cache), closure_hash_parts(&outputs));
}

#[test]
fn store_paths_made_at_evaluation_are_roots() {
    // builtins.toFile (one referring to another), builtins.path, and a Nix
    // path, which is copied into the store.
    let cache = build_drop_in_cache("plainPaths");
    let paths = drop_in_paths("[ d.refersToNote d.copiedDir d.copiedFile d.note ]");
    assert_eq!(store_paths_file(&cache), paths[..3]);
    assert_eq!(narinfo_hash_parts(&cache), closure_hash_parts(&paths[..3]));
    // The referred-to file is in the cache though it is no root.
    assert!(narinfo_hash_parts(&cache).contains(&hash_part(&paths[3]).to_string()));
}

#[test]
fn a_path_inside_a_store_path_stands_for_the_store_path() {
    let cache = build_drop_in_cache("insidePath");
    let dev = build_drop_in(&["library.dev"]);
    assert_eq!(store_paths_file(&cache), dev);
    assert_eq!(narinfo_hash_parts(&cache), closure_hash_parts(&dev));
    let store = tempdir();
    copy_out_of_cache(&cache, store.path(), &dev);
    assert_eq!(
        fs::read_to_string(in_store(store.path(), &dev[0]).join("include/library.h")).unwrap(),
        "int answer(void);\n"
    );
}

#[test]
fn a_root_nix_does_not_know_as_a_store_path_is_an_evaluation_error() {
    let missing = "/nix/store/00000000000000000000000000000000-x";
    assert_eq!(
        eval_error(&format!(
            r#"(mkBinaryCache {{ rootPaths = [ "{missing}" ]; }}).drvPath"#
        )),
        format!(
            "error: mkBinaryCache: the root \"{missing}\" is a string without context, so Nix \
             would not make it an input of the cache; give the derivation itself, or \
             builtins.storePath \"{missing}\""
        )
    );
    assert_eq!(
        eval_error(r#"(mkBinaryCache { rootPaths = [ "/tmp/x" ]; }).drvPath"#),
        "error: mkBinaryCache: the root \"/tmp/x\" is not in the Nix store (/nix/store)"
    );
    assert_eq!(
        eval_error(r#"(mkBinaryCache { rootPaths = [ { name = "x"; } ]; }).drvPath"#),
        "error: mkBinaryCache: rootPaths must hold derivations or store paths, got an \
         attribute set without outPath (attributes: name)"
    );
}

// The attributes of a stdenv.mkDerivation result

/// The line of `file` (a path under the repository) that contains `text`,
/// counted from 1, as `meta.position` counts.
fn line_of(file: &str, text: &str) -> usize {
    let source = fs::read_to_string(repo().join(file)).unwrap();
    let lines: Vec<usize> = (source.lines().enumerate())
        .filter(|(_, line)| line.contains(text))
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(lines.len(), 1, "{text:?} in {file}: {lines:?}");
    lines[0]
}

#[test]
fn function_args_lists_every_argument_with_whether_it_has_a_default() {
    // Tools and callPackage-style wiring read `lib.functionArgs`; nixpkgs'
    // function reports `{ compression = true; name = true; rootPaths =
    // false; }`, this one every option it takes.
    let expected = json!({
        "rootPaths": false,
        "name": true,
        "exclude": true,
        "compression": true,
        "compressionLevel": true,
        "priority": true,
        "wantMassQuery": true,
        "writeNarListing": true,
        "indexDebugInfo": true,
        "preferLocalBuild": true,
        "passthru": true,
        "meta": true,
    });
    let v = eval_with_overlay(
        "",
        r#"
        let
          inherit (pkgs.lib) functionArgs;
          called = pkgs.callPackage ./nix/mk-binary-cache.nix { mk-binary-cache = pkgs.hello; };
        in [
          (functionArgs pkgs.mkBinaryCache)
          (functionArgs called)
          (functionArgs (pkgs.mkBinaryCache.override { mk-binary-cache = pkgs.hello; }))
          (builtins.functionArgs mkBinaryCache)
          (functionArgs plain.mkBinaryCache)
        ]
        "#,
    );
    let [overlay, called, overridden, direct, nixpkgs] = v.as_array().unwrap().as_slice() else {
        panic!("{v}")
    };
    for (how, args) in [
        ("overlay", overlay),
        ("callPackage", called),
        (".override", overridden),
        ("import", direct),
    ] {
        assert_eq!(args, &expected, "{how}");
    }
    // Every argument of nixpkgs' function, with the same default-ness.
    for (name, has_default) in nixpkgs.as_object().unwrap() {
        assert_eq!(&expected[name], has_default, "{name}");
    }
}

#[test]
fn the_result_has_one_output_out_as_a_mk_derivation_result_does() {
    let query = r#"c: [
      c.outputs
      c.outputName
      (c.out.outPath == c.outPath)
      c.out.outputSpecified
      (map (o: o.outPath == c.outPath) c.all)
      (c.out.meta == c.meta)
    ]"#;
    let v = eval_with_overlay(
        "",
        &format!(
            r#"
            let
              query = {query};
              call = set: set.mkBinaryCache {{ rootPaths = [ set.hello ]; }};
            in [ (query (call pkgs)) (query (call plain)) ]
            "#
        ),
    );
    let expected = json!([["out"], "out", true, true, [true], true]);
    assert_eq!(v, json!([expected, expected]));
}

#[test]
fn outputs_other_than_out_are_an_evaluation_error() {
    // The builder writes one directory: a second output would fail the
    // build after the whole closure was fetched.
    let expected = r#"error: mkBinaryCache: outputs must be [ "out" ]: the cache is one directory, the output out"#;
    assert_eq!(
        eval_error(
            r#"(mkBinaryCache { rootPaths = [ root ]; outputs = [ "out" "dev" ]; }).drvPath"#
        ),
        expected
    );
    assert_eq!(
        eval_error(r#"(cache.overrideAttrs { outputs = [ "dev" ]; }).drvPath"#),
        expected
    );
}

#[test]
fn substitutes_are_allowed_and_local_builds_preferred_as_by_nixpkgs_function() {
    // As nixpkgs' function: a cache that a substituter holds is fetched, not
    // written again (which would mean fetching its whole closure first).
    let v = eval_with_overlay(
        "",
        r#"
        let
          call = set: set.mkBinaryCache { rootPaths = [ set.hello ]; };
          settings = c: [ (c.allowSubstitutes or true) c.preferLocalBuild ];
          # As any derivation attribute, it can still be set.
          local = pkgs.mkBinaryCache { rootPaths = [ pkgs.hello ]; allowSubstitutes = false; };
        in [ (settings (call pkgs)) (settings (call plain)) local.allowSubstitutes ]
        "#,
    );
    assert_eq!(v, json!([[true, true], [true, true], false]));
}

#[test]
fn meta_holds_what_mk_derivation_fills_in_as_nixpkgs_result_does() {
    // `position` names each function's file.
    let v = eval_with_overlay(
        "",
        r#"
        let
          meta = set: builtins.removeAttrs (set.mkBinaryCache { rootPaths = [ set.hello ]; }).meta [ "position" ];
        in [ (meta plain) (meta pkgs) ]
        "#,
    );
    let (nixpkgs, ours) = (&v[0], &v[1]);
    let mut missing = nixpkgs.clone();
    for key in ours.as_object().unwrap().keys() {
        assert_eq!(nixpkgs[key], ours[key], "meta.{key}");
        missing.as_object_mut().unwrap().remove(key);
    }
    // The two that doc/nix-function.md's list of differences gives reasons for.
    let missing: Vec<&String> = missing.as_object().unwrap().keys().collect();
    assert_eq!(missing, ["identifiers", "problems"]);
    assert_eq!(ours["available"], true);
    assert_eq!(ours["name"], "binary-cache");
    assert_eq!(ours["outputsToInstall"], json!(["out"]));
}

#[test]
fn meta_checks_find_what_nixpkgs_checks_find() {
    // The same findings and verdict (`available`) as nixpkgs' stdenv, with
    // its default config, for each reason a package is unavailable, and the
    // same maintainers and positions.
    let overridden = |meta: &str| {
        format!(
            "(set.mkBinaryCache {{ rootPaths = [ set.hello ]; }}).overrideAttrs {{ meta = {meta}; }}"
        )
    };
    for meta in [
        "{ }",
        r#"{ description = "a cache"; maintainers = [ { name = "a"; } ]; teams = [ { members = [ { name = "b"; } { name = "a"; } ]; } ]; }"#,
        "{ license = { free = false; }; }",
        "{ license = [ { free = true; } { free = false; } ]; }",
        r#"{ license = "MIT"; }"#,
        "{ broken = true; }",
        r#"{ platforms = [ "aarch64-darwin" ]; }"#,
        r#"{ badPlatforms = [ builtins.currentSystem ]; }"#,
        r#"{ knownVulnerabilities = [ "CVE-0000-0000" ]; }"#,
    ] {
        // Checked against the host platform: here, and where the caches are
        // made for macOS.
        for set_args in ["", r#"crossSystem = "aarch64-darwin";"#] {
            let v = eval_with_overlay(
                set_args,
                &format!(
                    r#"
                let
                  # Without what doc/nix-function.md's list of differences explains.
                  findings = set: builtins.removeAttrs ({}).meta [ "position" "identifiers" "problems" ];
                in [ (findings plain) (findings pkgs) ]
                "#,
                    overridden(meta)
                ),
            );
            assert_eq!(v[1], v[0], "meta = {meta}, {set_args}");
        }
    }
}

#[test]
fn meta_available_follows_config_as_for_stdenv_builds() {
    // callPackage hands the function nixpkgs' config; what it allows is
    // available.
    let available = |set_args: &str| {
        eval_with_overlay(
            set_args,
            r#"
            (pkgs.mkBinaryCache { rootPaths = [ pkgs.hello ]; meta.license.free = false; }).meta.available
            "#,
        )
    };
    assert_eq!(available(""), json!(false));
    assert_eq!(available("config.allowUnfree = true;"), json!(true));
    assert_eq!(
        available(r#"config.allowUnfreePredicate = p: p.name == "binary-cache";"#),
        json!(true)
    );
}

#[test]
fn an_unavailable_cache_is_refused_where_nixpkgs_refuses_a_package() {
    // As for a stdenv build: its meta can be read, its paths cannot, unless
    // config allows it.
    for (meta, allow) in [
        ("{ license.free = false; }", "allowUnfree"),
        ("{ broken = true; }", "allowBroken"),
        (
            r#"{ platforms = [ "aarch64-darwin" ]; }"#,
            "allowUnsupportedSystem",
        ),
    ] {
        for set_args in [String::new(), format!("config.{allow} = true;")] {
            let v = eval_with_overlay(
                &set_args,
                &format!(
                    r#"
                    let
                      outcome = set:
                        let c = (set.mkBinaryCache {{ rootPaths = [ set.hello ]; }}).overrideAttrs {{ meta = {meta}; }};
                        in [ (builtins.tryEval c.drvPath).success (builtins.tryEval c.outPath).success c.meta.available ];
                    in [ (outcome plain) (outcome pkgs) ]
                    "#
                ),
            );
            let allowed = !set_args.is_empty();
            let expected = json!([allowed, allowed, allowed]);
            assert_eq!(v, json!([expected, expected]), "{meta} {set_args}");
        }
    }
}

#[test]
fn a_refused_cache_says_why_and_how_to_allow_it() {
    let refused = |meta: &str| {
        eval_error(&format!(
            "(mkBinaryCache {{ rootPaths = [ root ]; meta = {meta}; }}).drvPath"
        ))
    };
    let mk = "nix/mk-binary-cache.nix";
    let at = format!(
        "{}:{}",
        repo().join(mk).display(),
        line_of(mk, "# Where the default name is given") + 2
    );
    let because = |why: &str| {
        format!("error: mkBinaryCache: refusing to evaluate binary-cache ({at}), because it {why}")
    };
    assert_eq!(
        refused("{ broken = true; }"),
        because(
            "is marked broken (meta.broken); allow it with config.allowBroken = true or NIXPKGS_ALLOW_BROKEN=1"
        )
    );
    assert_eq!(
        refused(r#"{ knownVulnerabilities = [ "CVE-0000-0000" ]; }"#),
        because(
            r#"is marked insecure (meta.knownVulnerabilities: CVE-0000-0000); allow it with config.permittedInsecurePackages = [ "binary-cache" ] or NIXPKGS_ALLOW_INSECURE=1"#
        )
    );
    // Without nixpkgs, config is given to the function.
    let v = eval(
        r#"
        let
          allowing = config: import ./nix/mk-binary-cache.nix { mk-binary-cache = root; inherit config; };
          insecure = mk: builtins.isString (mk { rootPaths = [ root ]; meta.knownVulnerabilities = [ "CVE-0000-0000" ]; }).drvPath;
        in [
          (insecure (allowing { permittedInsecurePackages = [ "binary-cache" ]; }))
          (insecure (allowing { allowInsecurePredicate = p: p.name == "binary-cache"; }))
        ]
        "#,
    );
    assert_eq!(v, json!([true, true]));
}

#[test]
fn nix_env_lists_a_cache_with_its_meta_and_leaves_out_a_refused_one() {
    // `nix-env -qa` (and what reads package sets as it does) reads `meta`,
    // and skips a package whose derivation is refused, as for nixpkgs.
    let dir = tempdir();
    let file = dir.path().join("caches.nix");
    fs::write(
        &file,
        format!(
            r#"
            let mkBinaryCache = import ({function}) {{ mk-binary-cache = {builder}; }};
            in {{
              described = mkBinaryCache {{ rootPaths = [ ]; meta.description = "a cache"; }};
              broken = mkBinaryCache {{ name = "broken-cache"; rootPaths = [ ]; meta.broken = true; }};
            }}
            "#,
            function = nix_path(&repo().join("nix/mk-binary-cache.nix")),
            builder = nix_path(busybox_dir()),
        ),
    )
    .unwrap();
    let query = |args: &[&str]| {
        run(nix_cmd("nix-env")
            .env("HOME", dir.path())
            .arg("--file")
            .arg(&file)
            .args(["--query", "--available"])
            .args(args))
    };
    let listed: Value = serde_json::from_str(&query(&["--json", "--meta"])).unwrap();
    let meta = &listed["described"]["meta"];
    assert_eq!(meta["description"], "a cache");
    assert_eq!(meta["available"], true);
    assert_eq!(meta["outputsToInstall"], json!(["out"]));
    assert_eq!(listed["broken"]["meta"]["available"], false);
    // With their derivations: the refused one is left out.
    let with_drvs = query(&["--attr-path", "--drv-path"]);
    let attrs: Vec<&str> = with_drvs
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(attrs, ["described"], "{with_drvs}");
}

#[test]
fn meta_position_is_where_the_caller_wrote_the_description_or_the_name() {
    // As mkDerivation's: `nix edit`, Hydra and error messages point there.
    let v = eval(&format!(
        "let d = import ./tests/fixtures/drop-in.nix {{ busyboxDir = {bb}; toolDir = {bb}; }}; \
         in [ d.delta.meta.position d.multiOutput.meta.position cache.meta.position ]",
        bb = nix_path(busybox_dir()),
    ));
    let fixture = "tests/fixtures/drop-in.nix";
    let at = |file: &str, line: usize| format!("{}:{line}", repo().join(file).display());
    assert_eq!(
        v,
        json!([
            at(
                fixture,
                line_of(fixture, r#"meta.description = "a delta cache";"#)
            ),
            at(fixture, line_of(fixture, r#"name = "multi-output-cache";"#)),
            // A default name: where the function gives it.
            at(
                "nix/mk-binary-cache.nix",
                line_of(
                    "nix/mk-binary-cache.nix",
                    "# Where the default name is given"
                ) + 2
            ),
        ])
    );
}

#[test]
fn meta_is_filled_in_without_lib_for_system_names_only() {
    // nix/mk-binary-cache.nix works without nixpkgs: `meta.platforms`
    // patterns (attribute sets) need lib to be matched.
    let v = eval(
        r#"
        let m = (mkBinaryCache { rootPaths = [ root ]; meta.platforms = [ builtins.currentSystem ]; }).meta;
        in [ m.name m.outputsToInstall m.unsupported m.available ]
        "#,
    );
    assert_eq!(v, json!(["binary-cache", ["out"], false, true]));
    assert_eq!(
        eval_error(
            r#"(mkBinaryCache { rootPaths = [ root ]; meta.platforms = [ { kernel.name = "linux"; } ]; }).meta.available"#
        ),
        "error: mkBinaryCache: meta.platforms and meta.badPlatforms can hold only system names \
         when the function is called without lib, got an attribute set"
    );
}

#[test]
fn input_derivation_refers_to_the_builder_the_roots_and_the_excluded_paths() {
    // As mkDerivation's: building it fetches (or builds) everything the
    // cache's build needs, and a GC root on it keeps them; it writes no NAR.
    let out = build_drop_in(&["delta.inputDerivation"]);
    assert_eq!(out.len(), 1, "{out:?}");
    let inputs = drop_in_paths("[ d.refersToNote d.note ]");
    let refs = run(nix_cmd("nix-store").args(["--query", "--references", &out[0]]));
    let mut names: Vec<&str> = refs.lines().map(|p| &basename(p)[33..]).collect();
    names.sort();
    // The tool directory is the builder here.
    assert_eq!(names, ["mk-binary-cache", "note.txt", "refers-to-note.txt"]);
    for input in &inputs {
        assert!(refs.lines().any(|r| r == input), "{input} in {refs}");
    }
    assert_eq!(narinfo_hash_parts(Path::new(&out[0])), Vec::<String>::new());
    let v = eval(&format!(
        "let d = import ./tests/fixtures/drop-in.nix {{ busyboxDir = {bb}; toolDir = {bb}; }}; \
         in [ d.delta.inputDerivation.name d.delta.inputDerivation.outputs ]",
        bb = nix_path(busybox_dir()),
    ));
    assert_eq!(v, json!(["delta-cache", ["out"]]));
}

// What a stdenv build has and this one cannot

#[test]
fn stdenv_attributes_read_from_old_are_errors_that_say_why() {
    // nixpkgs' function is a stdenv build: overrides written for it extend
    // its build inputs or its script. Here neither exists.
    let inputs = "the cache is written by the mk-binary-cache program alone, with no stdenv \
                  and no shell, so no build input would be used. To put store paths into the \
                  cache, add them to rootPaths; to run a tool on the cache, do it in a derivation \
                  of your own that takes the cache as an input (such as runCommand)";
    let script = "the cache is written by the mk-binary-cache program alone, with no stdenv \
                  and no shell, so no script, phase or hook would run. To change what the cache \
                  holds, set its options (rootPaths, exclude, compression, …); to change its \
                  files afterwards, do it in a derivation of your own that takes the cache as \
                  an input (such as runCommand)";
    for (expr, error) in [
        (
            r#"old: { name = "${old.name}-${toString old.nativeBuildInputs}"; }"#,
            format!("error: mkBinaryCache: nativeBuildInputs does not exist here: {inputs}"),
        ),
        (
            r#"final: prev: { name = "${prev.name}-${toString final.buildInputs}"; }"#,
            format!("error: mkBinaryCache: buildInputs does not exist here: {inputs}"),
        ),
        (
            r#"old: { name = old.buildCommand + "touch $out/extra"; }"#,
            format!("error: mkBinaryCache: buildCommand does not exist here: {script}"),
        ),
    ] {
        assert_eq!(
            eval_error(&format!("(cache.overrideAttrs ({expr})).name")),
            error,
            "{expr}"
        );
    }
}

#[test]
fn stdenv_attributes_set_by_a_call_or_an_override_are_errors_that_say_why() {
    // An override that extends the build inputs the way overlays extend
    // stdenv builds (reading them with a fallback) would change nothing in
    // the cache: it is refused, not ignored, whatever the value.
    let inputs_error = "error: mkBinaryCache: nativeBuildInputs cannot be set: the cache is \
                        written by the mk-binary-cache program alone";
    for expr in [
        "(cache.overrideAttrs (old: { nativeBuildInputs = (old.nativeBuildInputs or [ ]) ++ [ root ]; })).drvPath",
        "(cache.overrideAttrs { nativeBuildInputs = [ ]; }).drvPath",
        "(mkBinaryCache { rootPaths = [ root ]; nativeBuildInputs = [ root ]; }).drvPath",
    ] {
        let error = eval_error(expr);
        assert!(error.starts_with(inputs_error), "{expr}: {error}");
    }
    for attr in ["postInstall", "installPhase", "phases", "patches", "src"] {
        let error = eval_error(&format!(
            r#"(cache.overrideAttrs {{ {attr} = "x"; }}).drvPath"#
        ));
        assert!(
            error.starts_with(&format!(
                "error: mkBinaryCache: {attr} cannot be set: the cache is written by the \
                 mk-binary-cache program alone, with no stdenv and no shell, so no script, \
                 phase or hook would run."
            )),
            "{attr}: {error}"
        );
    }
}

#[test]
fn the_result_has_no_stdenv_attribute_for_tools_that_collect_them() {
    // mkShell's `inputsFrom` and similar tools collect `nativeBuildInputs`
    // and the like from packages with a fallback: the result itself has
    // none, so they find nothing rather than an error.
    let v = eval(
        r#"
        builtins.catAttrs "nativeBuildInputs" [ cache (cache.overrideAttrs { compression = "xz"; }) ]
        "#,
    );
    assert_eq!(v, json!([]));
}
