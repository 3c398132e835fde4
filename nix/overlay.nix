# Adds `mk-binary-cache` (the program), `mkBinaryCache` (the function that
# uses it as a derivation builder, replacing nixpkgs' own) and
# `signBinaryCache` (a script that signs a cache) to a package set.
final: prev: {
  mk-binary-cache = final.callPackage ./package.nix { };

  # The builder runs on the build platform, hence buildPackages.
  mkBinaryCache = final.callPackage ./mk-binary-cache.nix {
    mk-binary-cache = final.buildPackages.mk-binary-cache;
  };

  # A script that signs a cache outside the store: keys never enter it.
  signBinaryCache = final.callPackage ./sign-binary-cache.nix { };
}
