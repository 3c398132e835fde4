# The mk-binary-cache program, packaged for nixpkgs.
#
# Inside Nix the program links dynamically against nixpkgs' glibc; that is
# fine, because the builder's closure is an input of every cache derivation.
# `pkgsStatic.mk-binary-cache` gives a fully static one.
#
# With `publish = true` it is the other program, `mk-binary-cache-publish`,
# which uploads a cache to S3-compatible object storage (the cargo feature
# `publish`): a package of its own, so that the network client it carries
# never enters the closure of mkBinaryCache's builder.
{
  lib,
  rustPlatform,
  testers,
  callPackage,
  # Build mk-binary-cache-publish instead of mk-binary-cache.
  publish ? false,
}:

rustPlatform.buildRustPackage (finalAttrs: {
  pname = if publish then "mk-binary-cache-publish" else "mk-binary-cache";
  # Cargo.toml is the one place the version is written.
  inherit ((lib.importTOML ../Cargo.toml).package) version;

  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../Cargo.toml
      ../Cargo.lock
      # Build settings for the bundled liblzma (see the file).
      ../.cargo/config.toml
      ../src
      # Cargo.toml names the integration-test target, so its sources must exist.
      ../tests
    ];
  };

  cargoLock.lockFile = ../Cargo.lock;

  buildFeatures = lib.optional publish "publish";
  cargoBuildFlags = lib.optionals publish [
    "--bin"
    "mk-binary-cache-publish"
  ];

  # Only the unit tests run here. The integration tests (tests/it) check the
  # program against live Nix: they dump store paths, sign and verify with
  # Nix, and build caches with the sandbox on, none of which can run inside a
  # Nix build. `scripts/test` runs them all outside Nix.
  cargoTestFlags = [
    "--lib"
    "--bins"
  ];

  passthru.tests = {
    version = testers.testVersion { package = finalAttrs.finalPackage; };
  }
  # The publisher's uploads are tested against an S3 server by tests/it.
  // lib.optionalAttrs (!publish) {

    # A cache of a two-path closure, built by this package as the builder,
    # then read back by Nix into a scratch store.
    cache = callPackage (
      {
        runCommand,
        writeText,
        nix,
      }:
      let
        mkBinaryCache = import ./mk-binary-cache.nix {
          inherit lib;
          mk-binary-cache = finalAttrs.finalPackage;
        };
        greeting = writeText "greeting" "hello from mk-binary-cache\n";
        root = writeText "root" "${greeting}\n";
        cache = mkBinaryCache { rootPaths = [ root ]; };
      in
      runCommand "mk-binary-cache-test-cache" { nativeBuildInputs = [ nix ]; } ''
        export HOME=$TMPDIR NIX_STATE_DIR=$TMPDIR/state NIX_CONF_DIR=$TMPDIR/conf
        test "$(cat ${cache}/store-paths)" = ${root}
        nix --extra-experimental-features nix-command copy --no-check-sigs \
          --from file://${cache} --to $TMPDIR/store ${root}
        grep -q 'hello from' $TMPDIR/store${greeting}
        touch $out
      ''
    ) { };
  };

  meta = {
    description =
      if publish then
        "Uploads flat-file Nix binary caches to S3-compatible object storage, in an order safe for readers"
      else
        "Fast builder of flat-file Nix binary caches, a drop-in for mkBinaryCache";
    homepage = "https://github.com/mk-binary-cache/mk-binary-cache";
    license = lib.licenses.mit;
    mainProgram = finalAttrs.pname;
    # Linux only: the program reflinks with the FICLONE ioctl, which only
    # Linux has, and flushes with syncfs(2); it does not compile elsewhere.
    # The overlay keeps nixpkgs' own mkBinaryCache where this does not hold.
    platforms = lib.platforms.linux;
  };
})
