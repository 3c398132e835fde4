# Adds `mk-binary-cache` (the program) and `mkBinaryCache` (the function that
# uses it as a derivation builder, replacing nixpkgs' own) to a package set.
final: prev: {
  mk-binary-cache = final.callPackage ./package.nix { };

  # The builder runs on the build platform, hence buildPackages.
  mkBinaryCache = final.callPackage ./mk-binary-cache.nix {
    mk-binary-cache = final.buildPackages.mk-binary-cache;
  };
}
