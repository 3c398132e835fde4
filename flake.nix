{
  description = "Fast builder of flat-file Nix binary caches, a drop-in for mkBinaryCache";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  # A thin view of default.nix and nix/overlay.nix.
  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = lib.genAttrs systems;

      pkgsFor =
        system:
        import nixpkgs {
          inherit system;
          overlays = [ self.overlays.default ];
        };
      viewFor = system: import ./default.nix { pkgs = pkgsFor system; };
    in
    {
      overlays.default = import ./nix/overlay.nix;

      packages = forAllSystems (
        system:
        let
          view = viewFor system;
        in
        {
          default = view.mk-binary-cache;
          inherit (view) mk-binary-cache mk-binary-cache-publish example;
        }
      );

      # `mk-binary-cache.lib.${system}.mkBinaryCache { rootPaths = [ … ]; }`, and
      # `signBinaryCache { cache = …; }`, a script that signs a cache.
      lib = forAllSystems (system: {
        inherit (viewFor system) mkBinaryCache signBinaryCache;
      });

      checks = forAllSystems (
        system:
        let
          view = viewFor system;
          # default.nix given a plain package set, as a non-flake user would.
          plain = import ./default.nix { pkgs = nixpkgs.legacyPackages.${system}; };
        in
        {
          package = view.mk-binary-cache;
          publish = view.mk-binary-cache-publish;
          inherit (view) example;
          inherit (view.mk-binary-cache.tests) version cache;
          default-nix = plain.example;
        }
      );
    };
}
