"""The projects API: your projects, their members (owners manage them) and keys acting in a project."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts_app import selectors, services
from accounts_app.models import Membership, Project


def _ts(value) -> int | None:
    return int(value.timestamp()) if value else None


def project_object(project: Project) -> dict:
    """A project of ``selectors.projects_of``/``project_get`` (with the caller's ``role``)."""
    return {"object": "organization.project", "id": project.id, "name": project.name, "personal": project.personal,
            "role": project.role, "created_at": _ts(project.created_at)}


def member_object(membership: Membership) -> dict:
    return {"object": "organization.project.user", "id": membership.user_id,
            "username": membership.user.get_username(), "email": membership.user.email or None,
            "role": membership.role, "added_at": _ts(membership.created_at)}


class ProjectCreateSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="The team's name for it (at most 100 characters).")


class ProjectsApi(APIView):
    viewer_allowed = True  # a project of one's own, whatever one's role where one acts

    @extend_schema(responses={200: dict}, summary="List the projects you belong to (your personal one first)")
    def get(self, request):
        projects = selectors.projects_of(request.user)
        return Response({"object": "list", "data": [project_object(p) for p in projects]})

    @extend_schema(request=ProjectCreateSerializer, responses={200: dict},
                   summary="Create a project; you are its owner")
    def post(self, request):
        form = ProjectCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        project = services.project_create(user=request.user, name=form.validated_data["name"])
        return Response(project_object(selectors.project_get(request.user, project.id)))


class ProjectApi(APIView):
    @extend_schema(responses={200: dict}, summary="A project you belong to")
    def get(self, request, project_id: str):
        return Response(project_object(selectors.project_get(request.user, project_id)))


class MemberAddSerializer(serializers.Serializer):
    user = serializers.CharField(max_length=254, help_text="A username or an email of a user of this platform.")
    role = serializers.CharField(default=Membership.Role.MEMBER, help_text="owner, member or viewer.")


class ProjectMembersApi(APIView):
    viewer_allowed = True  # the project's own role rule applies (owners only), not the acting project's

    @extend_schema(responses={200: dict}, summary="The project's members and their roles")
    def get(self, request, project_id: str):
        project = selectors.project_get(request.user, project_id)
        return Response({"object": "list", "data": [member_object(m) for m in selectors.members_of(project)]})

    @extend_schema(request=MemberAddSerializer, responses={200: dict},
                   summary="Add a member or change a member's role (owners)")
    def post(self, request, project_id: str):
        project = selectors.project_get(request.user, project_id)
        form = MemberAddSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        membership = services.member_add(project=project, by=request.user, **form.validated_data)
        return Response(member_object(membership))


class ProjectMemberApi(APIView):
    viewer_allowed = True

    @extend_schema(responses={200: dict}, summary="Remove a member (owners), or leave the project yourself")
    def delete(self, request, project_id: str, user_id: int):
        project = selectors.project_get(request.user, project_id)
        services.member_remove(project=project, by=request.user, user_id=user_id)
        return Response({"object": "organization.project.user.deleted", "id": user_id, "deleted": True})


class ProjectKeyCreateSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="Where the key is used, e.g. laptop or ci (at most 100 characters).")


class ProjectApiKeysApi(APIView):
    viewer_allowed = True  # a viewer's key reads only, as they do

    @extend_schema(request=ProjectKeyCreateSerializer, responses={200: dict},
                   summary="A new API key of yours acting in this project (shown once)")
    def post(self, request, project_id: str):
        project = selectors.project_get(request.user, project_id)
        form = ProjectKeyCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        api_key, raw_key = services.api_key_create(user=request.user, name=form.validated_data["name"],
                                                   project=project)
        return Response({"object": "organization.project.api_key", "id": api_key.pk, "name": api_key.name,
                         "project_id": project.id, "key": raw_key, "created_at": _ts(api_key.created_at)})
