# The `mkBinaryCache` function: a drop-in for nixpkgs' function of the same
# name whose builder is the mk-binary-cache program itself. The derivation has
# no stdenv, no shell and no interpreter: Nix hands the closure to the program
# through structured attributes and the program writes the cache.
#
# Called in two steps, as nixpkgs' build-support functions are: callPackage (or
# a plain function call) supplies the program, the caller supplies the roots.
# It needs nothing from nixpkgs: `lib` is optional, and `mk-binary-cache` may
# be a derivation or any store path that holds `bin/mk-binary-cache`.
#
# nixpkgs' function returns a `stdenv.mkDerivation` result, so the result here
# has `overrideAttrs` with the same meaning, built on a small fixed point of
# its own instead of on stdenv.
#
# nixpkgs' function takes `stdenv`, `coreutils`, `jq`, `python3`, `nix`, `xz`
# and `zstd`, so `pkgs.mkBinaryCache.override { nix = …; }` is written for it;
# they are taken here too, and ignored, since none of them enters the build.
#
# `stdenv`, when given (callPackage gives it), is read for one thing only: its
# host platform, which `meta.platforms` is checked against as mkDerivation
# checks it. `config` (nixpkgs' configuration, which callPackage also gives)
# decides `meta.available` as it does for stdenv builds.
{
  lib ? null,
  config ? { },
  mk-binary-cache,
  stdenv ? null,
  coreutils ? null,
  jq ? null,
  python3 ? null,
  nix ? null,
  xz ? null,
  zstd ? null,
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

  # What `meta.platforms` is checked against: where the result is used, as
  # for any package.
  hostPlatform = if stdenv != null then stdenv.hostPlatform else { inherit system; };

  # `meta`, `passthru` and `pos` describe the result; they are not build
  # inputs.
  notDerivationAttrs = [
    "meta"
    "passthru"
    "pos"
  ];

  # Attributes of a `stdenv.mkDerivation` call that mean nothing here, each
  # with the reason and what to do instead. Here `old.X` (and `final.X`) is
  # an error that says why, and so is setting one, in a call or an override:
  # the build would silently ignore it.
  stdenvOnly = import ./stdenv-only.nix;

  # `attrs`, given by a call or returned by an override, unless it sets an
  # attribute of `stdenvOnly`.
  refuseStdenvOnly =
    attrs:
    let
      set = builtins.attrNames (builtins.intersectAttrs stdenvOnly attrs);
      name = builtins.head set;
    in
    if set == [ ] then attrs else throw "mkBinaryCache: ${name} cannot be set: ${stdenvOnly.${name}}";

  # What `old.X` gives for those attributes.
  stdenvOnlyPlaceholders = builtins.mapAttrs (
    name: reason: throw "mkBinaryCache: ${name} does not exist here: ${reason}"
  ) stdenvOnly;

  # "a string", "an int", "an attribute set", for error messages.
  aTypeOf =
    v:
    let
      type = builtins.typeOf v;
    in
    if type == "set" then
      "an attribute set"
    else if type == "int" then
      "an int"
    else
      "a ${type}";

  storePrefix = builtins.storeDir + "/";
  prefixLength = builtins.stringLength storePrefix;
  inStore = s: builtins.substring 0 prefixLength s == storePrefix;

  # The store path that holds `s`: "${hello}/bin/hello" gives "${hello}".
  # `substring` keeps the string's context, so Nix still knows the path as
  # an input. `split` does not, so it only measures the name.
  containingStorePath =
    s:
    let
      rest = builtins.substring prefixLength (builtins.stringLength s) s;
      base = builtins.head (builtins.split "/" rest);
    in
    builtins.substring 0 (prefixLength + builtins.stringLength base) s;

  # What `exportReferencesGraph` gets for a root. Older Nix versions (2.8,
  # for one) refuse a path inside a store path there when they build, newer
  # ones (2.34) accept it; so it gets the store path that holds it, whose
  # closure is the same. `rootPaths` keeps the path as it was given, and the
  # builder lists its store path in `store-paths`.
  exported = root: if builtins.isString root then containingStorePath root else root;

  # Throws the reason `root`, an element of the list attribute `list`
  # (`rootPaths` or `exclude`), cannot be one, or gives true.
  checkRoot =
    list: root:
    let
      the = if list == "rootPaths" then "the root" else "the ${list} path";
    in
    if builtins.isAttrs root then
      root ? outPath
      || throw "mkBinaryCache: ${list} must hold derivations or store paths, got an attribute set without outPath (attributes: ${builtins.concatStringsSep ", " (builtins.attrNames root)})"
    else if builtins.isPath root then
      # Copied into the store when the derivation is written.
      true
    else if !builtins.isString root then
      throw "mkBinaryCache: ${list} must hold derivations or store paths, got ${aTypeOf root}"
    else if !inStore root then
      throw "mkBinaryCache: ${the} \"${root}\" is not in the Nix store (${builtins.storeDir})"
    else if !builtins.hasContext root then
      throw "mkBinaryCache: ${the} \"${root}\" is a string without context, so Nix would not make it an input of the cache; give the derivation itself, or builtins.storePath \"${root}\""
    else
      true;

  # Throws the first thing wrong with the final attributes, or gives true.
  check =
    attrs:
    let
      inherit (attrs)
        rootPaths
        compression
        compressionLevel
        priority
        wantMassQuery
        ;
      notA = what: name: "mkBinaryCache: ${name} must be ${what}, got ${aTypeOf attrs.${name}}";
    in
    if !builtins.isList rootPaths then
      throw "mkBinaryCache: rootPaths must be a list of store paths, got ${aTypeOf rootPaths}"
    else if !builtins.isList attrs.exclude then
      throw "mkBinaryCache: exclude must be a list of store paths, got ${aTypeOf attrs.exclude}"
    else if !builtins.elem compression compressions then
      throw "mkBinaryCache: unknown compression \"${toString compression}\"; expected one of: ${builtins.concatStringsSep ", " compressions}"
    else if compressionLevel != null && !builtins.isInt compressionLevel then
      throw (notA "an integer or null" "compressionLevel")
    else if priority != null && !builtins.isInt priority then
      throw (notA "an integer or null" "priority")
    else if wantMassQuery != null && !builtins.isBool wantMassQuery then
      throw (notA "a bool or null" "wantMassQuery")
    else if !builtins.isBool attrs.writeNarListing then
      throw (notA "a bool" "writeNarListing")
    else if !builtins.isBool attrs.indexDebugInfo then
      throw (notA "a bool" "indexDebugInfo")
    else if !builtins.isAttrs attrs.passthru then
      throw (notA "an attribute set" "passthru")
    else if !builtins.isAttrs attrs.meta then
      throw (notA "an attribute set" "meta")
    else if attrs.outputs != [ "out" ] then
      throw "mkBinaryCache: outputs must be [ \"out\" ]: the cache is one directory, the output out"
    else
      builtins.all (checkRoot "rootPaths") rootPaths && builtins.all (checkRoot "exclude") attrs.exclude;

  # `{ meta; refusal; }` for the final attributes.
  checkMeta = import ./check-meta.nix { inherit lib config hostPlatform; };

  # What `overrideAttrs` accepts, as mkDerivation's does: the new attributes,
  # a function of the previous ones (`old: { … }`), or a function of the
  # final and the previous ones (`final: prev: { … }`). A function whose
  # result is again a function is the two-argument form.
  toExtension =
    f:
    if builtins.isFunction f || f ? __functor then
      final: prev:
      let
        fromPrev = f prev;
      in
      if builtins.isFunction fromPrev then f final prev else fromPrev
    else
      _final: _prev: f;

  # `extension` applied on top of the attributes `rattrs` gives.
  extend =
    extension: rattrs: final:
    let
      prev = rattrs final;
    in
    prev // refuseStdenvOnly (extension final prev);

  # The cache described by `rattrs`, a function from the final attributes
  # (with `finalPackage`, the result itself, and its `overrideAttrs`) to the
  # attributes.
  makeCache =
    rattrs:
    let
      attrs = rattrs (
        attrs
        // {
          finalPackage = cache;
          inherit overrideAttrs;
        }
      );
      overrideAttrs = f: makeCache (extend (toExtension f) rattrs);
      derivationAttrs =
        builtins.removeAttrs attrs (notDerivationAttrs ++ builtins.attrNames stdenvOnly)
        // {
          inherit system builder;
          __structuredAttrs = true;
          # Nix puts the closure, with hashes, sizes and references, into
          # the attributes file as `closure`.
          exportReferencesGraph.closure = map exported attrs.rootPaths;
          # And the closure of `exclude` as `exclude`: the builder leaves
          # it out (a delta cache). Empty by default.
          exportReferencesGraph.exclude = map exported attrs.exclude;
        };
      drv = derivation derivationAttrs;

      # What building the cache needs: the builder, the roots and what is
      # excluded. As mkDerivation's `inputDerivation`, a derivation whose
      # output refers to each, so that building it fetches or builds them
      # and a GC root on it keeps them. It needs no shell: it is a cache of
      # all of them with all of them excluded, whose `store-paths` lists
      # them and which holds nothing else.
      inputs = [ (exported builder) ] ++ attrs.rootPaths ++ attrs.exclude;
      inputDerivation = derivation (
        derivationAttrs
        // {
          rootPaths = inputs;
          exportReferencesGraph = {
            closure = map exported inputs;
            exclude = map exported inputs;
          };
        }
      );

      checkedMeta = checkMeta attrs;
      # As mkDerivation's result, where the cache is not available (by
      # `meta`, under `config`): its meta can be read, its paths cannot.
      refused =
        if checkedMeta.refusal == null then
          { }
        else
          {
            drvPath = throw checkedMeta.refusal;
            outPath = throw checkedMeta.refusal;
          };

      # As mkDerivation's result: the derivation, with `passthru` over it.
      # `out` (the only output) is the result itself, as there.
      withPassthru =
        drv
        // refused
        // {
          inherit inputDerivation overrideAttrs;
          inherit (attrs) passthru;
          inherit (checkedMeta) meta;
        }
        // attrs.passthru;
      cache =
        assert check attrs;
        withPassthru
        // {
          out = cache // {
            outputSpecified = true;
          };
          all = [ cache.out ];
        };
    in
    cache;
in

/**
  Write a flat-file Nix binary cache holding the closure of `rootPaths`.

  The output is a directory that Nix accepts as a substituter
  (`file:///nix/store/…-binary-cache`): `nix-cache-info`, one
  `<hash>.narinfo` per store path, the compressed NARs under `nar/`, the
  empty `log/`, `realisations/`, `build-trace-v2/` and `debuginfo/`
  directories a read-only cache needs, and `store-paths`, which lists the
  store paths of `rootPaths` one per line.

  Every store path in the cache appears in the narinfos, so the cache refers
  to the whole closure, as the cache made by nixpkgs' function does.

  # Inputs

  `name` (string, default `"binary-cache"`)
  : The name of the derivation.

  `rootPaths` (list of derivations or store paths)
  : The paths whose closure goes into the cache. May be empty. Each is a
    derivation (its default output, or the one chosen: `drv.dev`), a store
    path (a string with context, such as `builtins.toFile …`,
    `builtins.path { … }` or `builtins.storePath "/nix/store/…"`, or a
    Nix path, copied into the store) or a path inside a store path
    (`"${hello}/bin/hello"`), which stands for the store path that holds it.
    A string without context or outside the store is an evaluation error.

  `exclude` (list of derivations or store paths, default `[ ]`)
  : Leave the closure of these paths out of the cache: a delta cache, for
    machines that already have them (a base system, a previous release).
    The narinfos still name every reference, so such a machine substitutes
    the rest from this cache; `store-paths` still lists every root, even
    one that is excluded (and so has no narinfo here). Each may be of any
    kind `rootPaths` takes.

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

  `passthru`, `meta` (attribute sets, default `{ }`)
  : Attached to the result, not passed to the derivation; `passthru`'s
    attributes also appear on the result itself, and `meta` is filled in
    as `stdenv.mkDerivation` fills it (see ./check-meta.nix).

  `preferLocalBuild` (bool, default `true`)
  : As nixpkgs' function sets it. Substitutes are allowed, as there.

  Any other attribute is passed on to the derivation, but for `outputs`,
  which can only be `[ "out" ]`, and the attributes of a stdenv build
  (./stdenv-only.nix), which are an evaluation error that says why.

  # Result

  A derivation with `overrideAttrs`, which takes what mkDerivation's takes:
  an attribute set, `old: { … }` or `final: prev: { … }`. The previous
  attributes are the arguments above, defaults included, with the overrides
  so far applied (`old.rootPaths`, `old.compression`, `old.passthru`, …); the
  final ones also hold `finalPackage`. Overrides compose, and are checked as
  a direct call is: `.overrideAttrs { compression = "xz"; }` gives an xz
  cache, `.overrideAttrs { compression = "gzip"; }` the same evaluation error
  as `mkBinaryCache { compression = "gzip"; … }`.

  As a mkDerivation result, it also has `outputs` (`[ "out" ]`), `out`,
  `all`, `meta` filled in, and `inputDerivation`, a derivation whose output
  refers to the builder, the roots and `exclude`. Where `meta` makes the
  cache unavailable (unfree, broken, unsupported, insecure, and not allowed
  by `config`), its `drvPath` and `outPath` are an error that says why.

  # Type

  ```
  mkBinaryCache :: {
    name ? String,
    rootPaths :: [Derivation | Path | String],
    exclude ? [Derivation | Path | String],
    compression ? "zstd" | "xz" | "none",
    compressionLevel ? Int | Null,
    priority ? Int | Null,
    wantMassQuery ? Bool | Null,
    writeNarListing ? Bool,
    indexDebugInfo ? Bool,
    preferLocalBuild ? Bool,
    passthru ? AttrSet,
    meta ? AttrSet,
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

  :::{.example}
  ## Changing a cache with `overrideAttrs`

  ```nix
  (pkgs.mkBinaryCache { rootPaths = [ pkgs.hello ]; }).overrideAttrs (old: {
    compression = "xz";
    rootPaths = old.rootPaths ++ [ pkgs.hello.man ];
  })
  ```
  :::
*/
{
  rootPaths,
  name ? "binary-cache",
  exclude ? [ ],
  compression ? "zstd",
  compressionLevel ? null,
  priority ? null,
  wantMassQuery ? null,
  writeNarListing ? false,
  indexDebugInfo ? false,
  # Built where it is asked for, not on a remote builder, which would first
  # have to receive the whole closure; as nixpkgs' function sets it.
  # Substitutes are allowed (Nix's default), as there: fetching a cache that
  # a substituter holds saves fetching its whole closure to write it.
  preferLocalBuild ? true,
  passthru ? { },
  meta ? { },
  ...
}@args:
makeCache (
  _final:
  stdenvOnlyPlaceholders
  // {
    outputs = [ "out" ];
    # Where the default name is given: `meta.position` points at the next
    # line when the caller gives neither a name nor `meta.description`.
    inherit name;
    inherit
      rootPaths
      exclude
      compression
      compressionLevel
      priority
      wantMassQuery
      writeNarListing
      indexDebugInfo
      preferLocalBuild
      passthru
      meta
      ;
  }
  # Given last, so that `meta.position` points where the caller wrote `name`.
  // refuseStdenvOnly args
)
