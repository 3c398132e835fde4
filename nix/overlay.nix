# Adds `mk-binary-cache` (the program), `mk-binary-cache-publish` (its
# uploader to object storage), `mkBinaryCache` (the function that
# uses it as a derivation builder, replacing nixpkgs' own) and
# `signBinaryCache` (a script that signs a cache) to a package set.
#
# The program runs on Linux only (see `meta.platforms` in ./package.nix). Where
# it cannot run, the overlay takes nothing away: on a build platform it does
# not support, `mkBinaryCache` stays nixpkgs' own, and `signBinaryCache`, which
# runs it on the host platform, says why it is missing when used.
final: prev:
let
  inherit (final) lib;

  # The builder of a cache runs on the build platform, hence buildPackages.
  builderProgram = final.buildPackages.mk-binary-cache;

  # Whether `package` can run on `platform`, by its meta.platforms and
  # meta.badPlatforms.
  inherit (lib.meta) availableOn;

  unsupported =
    what: platform:
    "${what}: mk-binary-cache does not run on ${platform.system} (its meta.platforms: ${builtins.concatStringsSep ", " final.mk-binary-cache.meta.platforms})";
in
{
  mk-binary-cache = final.callPackage ./package.nix { };

  # `mk-binary-cache-publish CACHE s3://…`, a separate package: the builder
  # above stays small and offline.
  mk-binary-cache-publish = final.callPackage ./package.nix { publish = true; };

  mkBinaryCache =
    if availableOn final.stdenv.buildPlatform builderProgram then
      final.callPackage ./mk-binary-cache.nix { mk-binary-cache = builderProgram; }
    else
      prev.mkBinaryCache
        or (throw "${unsupported "mkBinaryCache" final.stdenv.buildPlatform}, and this package set has no mkBinaryCache of its own");

  # A script that signs a cache outside the store: keys never enter it.
  signBinaryCache =
    if availableOn final.stdenv.hostPlatform final.mk-binary-cache then
      final.callPackage ./sign-binary-cache.nix { }
    else
      throw (unsupported "signBinaryCache" final.stdenv.hostPlatform);
}
