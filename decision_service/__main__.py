import sys

from decision_service.cli import main

sys.exit(main())
