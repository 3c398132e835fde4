# The `mkBinaryCache` function: a drop-in for nixpkgs' function of the same
# name whose builder is the mk-binary-cache program itself. The derivation has
# no stdenv, no shell and no interpreter: Nix hands the closure to the program
# through structured attributes and the program writes the cache.
#
# Called in two steps, as nixpkgs' build-support functions are: callPackage (or
# a plain function call) supplies the program, the caller supplies the roots.
# It needs nothing from nixpkgs: `lib` is optional, and `mk-binary-cache` may
# be a derivation or any store path that holds `bin/mk-binary-cache`.
{
  lib ? null,
  mk-binary-cache,
}:

let
  # Compression names the program accepts, as nixpkgs' mkBinaryCache does.
  compressions = [
    "zstd"
    "xz"
    "none"
  ];

  builder =
    if lib != null && builtins.isAttrs mk-binary-cache && mk-binary-cache ? meta.mainProgram then
      lib.getExe mk-binary-cache
    else
      "${mk-binary-cache}/bin/mk-binary-cache";

  # The builder runs on the build platform: a derivation knows its system; a
  # bare store path (as the tests pass) is taken to run on this machine.
  system = mk-binary-cache.system or builtins.currentSystem;

  # `meta` and `passthru` describe the result; they are not build inputs.
  notDerivationAttrs = [
    "meta"
    "passthru"
  ];
in

/**
  Write a flat-file Nix binary cache holding the closure of `rootPaths`.

  The output is a directory that Nix accepts as a substituter
  (`file:///nix/store/…-binary-cache`): `nix-cache-info`, one
  `<hash>.narinfo` per store path, the compressed NARs under `nar/`, the
  empty `log/`, `realisations/`, `build-trace-v2/` and `debuginfo/`
  directories a read-only cache needs, and `store-paths`, which lists
  `rootPaths` one per line.

  Every store path in the cache appears in the narinfos, so the cache refers
  to the whole closure, as the cache made by nixpkgs' function does.

  # Inputs

  `name` (string, default `"binary-cache"`)
  : The name of the derivation.

  `rootPaths` (list of derivations or store paths)
  : The paths whose closure goes into the cache. May be empty.

  `exclude` (list of derivations or store paths, default `[ ]`)
  : Leave the closure of these paths out of the cache: a delta cache, for
    machines that already have them (a base system, a previous release).
    The narinfos still name every reference, so such a machine substitutes
    the rest from this cache; `store-paths` still lists every root, even
    one that is excluded (and so has no narinfo here).

  `compression` (`"zstd"`, `"xz"` or `"none"`, default `"zstd"`)
  : How the NARs are compressed. `"zstd"` needs Nix 2.4 or newer to read.

  `compressionLevel` (integer or `null`, default `null`)
  : The compressor's level; `null` means its default (zstd 3, xz 6).

  `priority` (integer or `null`, default `null`)
  : Written as `Priority:` into `nix-cache-info`; lower is tried first.

  `wantMassQuery` (bool or `null`, default `null`)
  : Written as `WantMassQuery: 1` or `0` into `nix-cache-info`.

  `writeNarListing` (bool, default `false`)
  : Also write a `<hash>.ls` listing per path, as `nix copy` does with
    `write-nar-listing=true`.

  `indexDebugInfo` (bool, default `false`)
  : Also index the `lib/debug/.build-id` files in `debuginfo/`, as `nix copy`
    does with `index-debug-info=true`.

  Any other attribute is passed on to the derivation; `meta` and `passthru`
  are attached to the result instead.

  # Type

  ```
  mkBinaryCache :: {
    name ? String,
    rootPaths :: [Derivation | Path],
    exclude ? [Derivation | Path],
    compression ? "zstd" | "xz" | "none",
    compressionLevel ? Int | Null,
    priority ? Int | Null,
    wantMassQuery ? Bool | Null,
    writeNarListing ? Bool,
    indexDebugInfo ? Bool,
    ...
  } -> Derivation
  ```

  # Examples
  :::{.example}
  ## `mkBinaryCache` usage example

  ```nix
  pkgs.callPackage ({ mkBinaryCache, hello }: mkBinaryCache { rootPaths = [ hello ]; }) { }
  ```

  Then, unsigned:

  ```
  nix-build … --option substituters file://$PWD/result --option require-sigs false
  ```

  or signed, outside the store, so that the secret key never enters it
  (`signBinaryCache` in ./sign-binary-cache.nix makes a script of this):

  ```
  mk-binary-cache sign --key-file /run/keys/cache.secret --out /srv/cache result
  nix-build … --option substituters file:///srv/cache --option trusted-public-keys "$(cat cache.public)"
  ```
  :::
*/
{
  name ? "binary-cache",
  rootPaths,
  exclude ? [ ],
  compression ? "zstd",
  compressionLevel ? null,
  priority ? null,
  wantMassQuery ? null,
  writeNarListing ? false,
  indexDebugInfo ? false,
  ...
}@args:

let
  checked =
    if !builtins.isList rootPaths then
      throw "mkBinaryCache: rootPaths must be a list of store paths, got a ${builtins.typeOf rootPaths}"
    else if !builtins.isList exclude then
      throw "mkBinaryCache: exclude must be a list of store paths, got a ${builtins.typeOf exclude}"
    else if !builtins.elem compression compressions then
      throw "mkBinaryCache: unknown compression \"${toString compression}\"; expected one of: ${builtins.concatStringsSep ", " compressions}"
    else if compressionLevel != null && !builtins.isInt compressionLevel then
      throw "mkBinaryCache: compressionLevel must be an integer or null, got a ${builtins.typeOf compressionLevel}"
    else if priority != null && !builtins.isInt priority then
      throw "mkBinaryCache: priority must be an integer or null, got a ${builtins.typeOf priority}"
    else if wantMassQuery != null && !builtins.isBool wantMassQuery then
      throw "mkBinaryCache: wantMassQuery must be a bool or null, got a ${builtins.typeOf wantMassQuery}"
    else
      true;

  drv = derivation (
    builtins.removeAttrs args notDerivationAttrs
    // {
      inherit
        name
        system
        builder
        rootPaths
        compression
        compressionLevel
        priority
        wantMassQuery
        writeNarListing
        indexDebugInfo
        ;
      __structuredAttrs = true;
      # Nix puts the closure, with hashes, sizes and references, into the
      # attributes file as `closure`.
      exportReferencesGraph.closure = rootPaths;
      # And the closure to leave out as `exclude` (replacing the list of
      # paths of the same name): computed in the build, no IFD.
      exportReferencesGraph.exclude = exclude;
      # Writing a cache is cheaper than fetching one.
      preferLocalBuild = true;
      allowSubstitutes = false;
    }
  );
in
assert checked;
drv // (args.passthru or { }) // { meta = args.meta or { }; }
