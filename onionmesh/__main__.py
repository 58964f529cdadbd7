from onionmesh.app.cli import main

raise SystemExit(main())
