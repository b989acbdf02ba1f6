"""Image datasets: user folders, the bundled default photos, Fashion-MNIST."""
