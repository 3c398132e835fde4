# `signBinaryCache`: a script that writes a signed copy of a binary cache,
# such as a `mkBinaryCache` output, outside of any build.
#
# A cache cannot be signed inside its derivation without handing the secret
# key to the build, and everything a build is handed ends up in the
# world-readable store. So the cache is built unsigned, and signed afterwards
# by a script that reads the key when it runs: the key is a string naming a
# file, never a Nix path (a path would be copied into the store when the
# script is written).
#
# Called in two steps, as nixpkgs' build-support functions are: callPackage
# supplies the program and `writeShellScriptBin`, the caller the cache.
{
  mk-binary-cache,
  writeShellScriptBin,
}:

let
  # Single-quotes `s` for the shell.
  quote = s: "'${builtins.replaceStrings [ "'" ] [ "'\\''" ] s}'";

  checkKeyFile =
    key:
    if builtins.isPath key then
      throw "signBinaryCache: the key file ${toString key} is a Nix path, which would copy the secret key into the world-readable store; give its location as a string instead: \"${toString key}\""
    else if !builtins.isString key then
      throw "signBinaryCache: keyFiles must be strings naming files, got a ${builtins.typeOf key}"
    else if builtins.hasContext key then
      throw "signBinaryCache: the key file \"${key}\" is in the store, where anyone can read it; keep secret keys out of the store"
    else
      key;
in

/**
  A script that writes a signed copy of the binary cache `cache`.

  The result holds `bin/sign-binary-cache`. Run it with the directory the
  signed copy goes to: `result/bin/sign-binary-cache OUT-DIR [--key-file SECRET]…`.
  It runs `mk-binary-cache sign --out OUT-DIR` on the cache; the NAR files
  are hard-linked into the copy when it is on the same filesystem as the
  store (else reflinked, else copied), the narinfos are written signed.

  # Inputs

  `cache` (derivation or store path)
  : The cache to sign, e.g. the result of `mkBinaryCache`.

  `keyFiles` (list of strings, default `[ ]`)
  : Secret key files (`nix-store --generate-binary-cache-key` writes them),
    read when the script runs. Strings, not paths: a Nix path such as
    `./cache.secret` is refused, since writing it into the script would copy
    the key into the store. More keys can be given when running the script,
    with `--key-file`.

  `name` (string, default `"sign-binary-cache"`)
  : The name of the script, and of the derivation.

  # Type

  ```
  signBinaryCache :: {
    cache :: Derivation | Path,
    keyFiles ? [String],
    name ? String,
  } -> Derivation
  ```

  # Examples
  :::{.example}
  ## `signBinaryCache` usage example

  ```nix
  pkgs.signBinaryCache {
    cache = pkgs.mkBinaryCache { rootPaths = [ pkgs.hello ]; };
    keyFiles = [ "/run/keys/cache.secret" ];
  }
  ```

  Then: `./result/bin/sign-binary-cache /srv/cache`, and on the consumer side
  `--option trusted-public-keys "$(cat cache.public)"`.
  :::
*/
{
  cache,
  keyFiles ? [ ],
  name ? "sign-binary-cache",
}:

let
  keyArgs = builtins.concatStringsSep " " (
    map (key: "--key-file ${quote (checkKeyFile key)}") keyFiles
  );
in
writeShellScriptBin name ''
  if [ "$#" -lt 1 ]; then
    echo "usage: $0 OUT-DIR [--key-file SECRET]..." >&2
    echo "Writes a signed copy of ${cache} to OUT-DIR." >&2
    exit 2
  fi
  out=$1
  shift
  exec ${mk-binary-cache}/bin/mk-binary-cache sign ${keyArgs} "$@" --out "$out" ${cache}
''
