# Entry point without flakes: `nix-build` builds the program and an example
# cache; `(import ./. { }).mkBinaryCache` is the function.
#
# Everything here comes from nix/overlay.nix; flake.nix is a view of this file.
# A package set given without the overlay gets it applied.
{
  pkgs ? import <nixpkgs> { overlays = [ (import ./nix/overlay.nix) ]; },
}:
let
  final = if pkgs ? mk-binary-cache then pkgs else pkgs.appendOverlays [ (import ./nix/overlay.nix) ];
in
{
  inherit (final)
    mk-binary-cache
    mk-binary-cache-publish
    mkBinaryCache
    signBinaryCache
    ;

  # A cache holding the closure of GNU hello.
  example = final.mkBinaryCache { rootPaths = [ final.hello ]; };
}
