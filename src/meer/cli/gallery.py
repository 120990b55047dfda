"""``meer gallery DB ...``: enrol, list, rename and delete people in a gallery database.

    meer gallery people.db add ann ann1.jpg ann2.jpg -m runs/tiny   # one template per photo
    meer gallery people.db list
    meer gallery people.db rename ann "Ann Lee"
    meer gallery people.db delete "Ann Lee"                        # and every template of hers

``meer enroll DIR -o people.db`` enrols a whole folder and ``meer identify IMG -g people.db``
answers a person or "unknown" (see ``meer.gallery``).
"""

from __future__ import annotations

import argparse

from meer.cli.inference import add_model_arguments, load_from_args, print_json


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("gallery", help="enrol, list, rename or delete people in a gallery database",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("database", metavar="DB", help="gallery database (e.g. people.db)")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="enrol a person from photos (created if DB is missing)")
    add.add_argument("name")
    add.add_argument("photos", nargs="+", metavar="PHOTO")
    add.add_argument("--masked", choices=["auto", "true", "false"], default="auto",
                     help="whether the photos show masked faces (default: auto, the model's verdict)")
    add.add_argument("--add", action="store_true", help="add the photos to someone already enrolled")
    add_model_arguments(add)
    listing = actions.add_parser("list", help="everyone enrolled")
    listing.add_argument("--json", action="store_true", help="print one JSON object")
    rename = actions.add_parser("rename", help="rename a person")
    rename.add_argument("old")
    rename.add_argument("new")
    delete = actions.add_parser("delete", help="delete a person and all their templates")
    delete.add_argument("name")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from meer.gallery import GalleryStore, enroll_photos, open_gallery

    if args.action == "add":
        model = load_from_args(args)
        masked = None if args.masked == "auto" else args.masked == "true"
        with open_gallery(args.database, model) as gallery:
            person = enroll_photos(gallery, model, args.name, args.photos, masked=masked,
                                   aligned=args.aligned, add=args.add)
        if args.json:
            print_json(person.to_dict())
        else:
            print(f"enrolled {person.name}: {person.templates} templates ({person.masked} masked) in {args.database}")
        return 0
    with GalleryStore(args.database, create=False) as gallery:
        if args.action == "list":
            people = gallery.people()
            if args.json:
                print_json({"model": gallery.fingerprint, "people": [p.to_dict() for p in people]})
                return 0
            print(f"{len(people)} people in {args.database} (model {gallery.fingerprint})")
            for person in people:
                print(f"  {person.name}  {person.templates} templates ({person.masked} masked), enrolled {person.created_at}")
        elif args.action == "rename":
            gallery.rename(args.old, args.new)
            print(f"renamed {args.old} to {args.new}")
        else:
            removed = gallery.delete(args.name)
            print(f"deleted {args.name} and {removed} templates")
    return 0
